"""The holes a fault drill found: each test here failed before its fix."""

import csv
import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch
from conftest import tone, write_audio

from spectro.cli import main
from spectro.config import FeatureConfig, ImageConfig, QualityConfig
from spectro.corpora import Utterance, scan_corpus
from spectro.errors import DataError
from spectro.image_tree import read_image_manifest, recording_key, window_file
from spectro.images import build_image_dataset

SMALL = FeatureConfig(image=ImageConfig(size=32))


def _rejected(tree) -> list[dict]:
    with open(tree / "rejected.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_full_disk_stops_the_job_naming_the_path_and_a_rerun_completes(synth_corpus, tmp_path, monkeypatch, capsys):
    import spectro.rendering as rendering

    real, written = rendering.save_window, []

    def disk_fills_after_five(windows, path):
        if len(written) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        real(windows, path)

    monkeypatch.setattr(rendering, "save_window", disk_fills_after_five)
    args = ["images", "--corpus", f"synth={synth_corpus}", "--out", str(tmp_path / "tree"), "--set", "image.size=32",
            "--workers", "1", "--quiet"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and str(tmp_path / "tree") in error
    assert "run the same command again" in error
    assert _rejected(tmp_path / "tree") == []  # the machine's fault is held against no recording
    assert len(read_image_manifest(tmp_path / "tree")) == 5  # what was finished is kept
    monkeypatch.setattr(rendering, "save_window", real)
    assert main(args) == 0
    assert "27 recording(s) rendered, 5 already present, 0 rejected" in capsys.readouterr().out
    assert len(read_image_manifest(tmp_path / "tree")) == 32


def test_an_output_that_cannot_be_a_folder_is_a_clear_error_not_a_traceback(synth_corpus, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the tree should go")
    assert main(["images", "--corpus", f"synth={synth_corpus}", "--out", str(tmp_path / "taken"), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "taken" in error and "Traceback" not in error and "run the same command again" in error


def test_dot_dot_in_manifest_fields_stays_inside_out(tmp_path, capsys):
    source = write_audio(tmp_path / "in" / "x.wav", tone(seconds=0.5))
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "language", "gender"])
        writer.writerow([source, "../../evil", "../../../etc/x", "happy", "en", ""])
    out = tmp_path / "out"
    assert main(["images", "--manifest", str(manifest), "--out", str(out), "--set", "image.size=32", "--quiet"]) == 0
    made = [p for p in tmp_path.rglob("*.png")]
    assert len(made) == 1 and made[0].resolve().is_relative_to(out.resolve())
    assert made[0].parent == out / "happy" and made[0].name == "evil__etc_x__x__w000.png"


def test_two_image_jobs_on_one_tree_the_second_is_refused_and_the_tree_completes(synth_corpus, tmp_path):
    tree = tmp_path / "tree"
    slow_job = ("import sys, time; import spectro.rendering as im; from spectro.cli import main; real = im.render; "
                "im.render = lambda task: (time.sleep(0.05), real(task))[1]; sys.exit(main(sys.argv[1:]))")
    args = ["images", "--corpus", f"synth={synth_corpus}", "--out", str(tree), "--set", "image.size=32", "--workers",
            "1", "--quiet"]
    first = subprocess.Popen([sys.executable, "-c", slow_job, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tree.rglob("*.png")) and time.monotonic() < deadline:  # the first job is rendering
        time.sleep(0.01)
    utterances = scan_corpus("synth", synth_corpus).utterances
    with pytest.raises(DataError, match=rf"in use by spectro images \(PID {first.pid}\)"):
        build_image_dataset(utterances, tree, SMALL, workers=1, progress=False)
    assert first.wait(120) == 0
    rows = read_image_manifest(tree)
    assert len(rows) == 32 and all(path.with_name(path.name + "__w000.png").is_file() for path, _ in rows)
    assert not list(tree.rglob("*.tmp"))


def test_verify_repairs_a_truncated_png_that_training_would_name(synth_corpus, tmp_path):
    from spectro.config import ExperimentConfig, from_dict
    from spectro.training import Trainer

    utterances = scan_corpus("synth", synth_corpus).utterances
    tree = tmp_path / "tree"
    build_image_dataset(utterances, tree, SMALL, workers=1, progress=False)
    victim = tree / window_file(recording_key(utterances[3]), 0, True)
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    assert build_image_dataset(utterances, tree, SMALL, workers=1, progress=False).written == 0  # looks present
    config = from_dict(ExperimentConfig, {
        "data": {"train": [str(tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False}, "train": {"epochs": 1},
        "run": {"name": "t", "checkpoint_dir": str(tmp_path / "ck"), "log_dir": str(tmp_path / "runs")}})
    with pytest.raises(DataError, match=rf"cannot read {victim}.*--verify"):
        Trainer(config, progress=False).fit()
    result = build_image_dataset(utterances, tree, SMALL, workers=1, progress=False, verify=True)
    assert (result.written, result.skipped) == (1, 31)
    assert victim.read_bytes() == whole


def test_a_corrupt_features_json_says_what_to_do(synth_corpus, tmp_path):
    utterances = scan_corpus("synth", synth_corpus).utterances[:2]
    build_image_dataset(utterances, tmp_path / "tree", SMALL, workers=1, progress=False)
    (tmp_path / "tree" / "features.json").write_text('{"features": {"feature": "mel", "audio"')
    with pytest.raises(DataError, match="features.json cannot be read.*remove the folder and render it again"):
        build_image_dataset(utterances, tmp_path / "tree", SMALL, workers=1, progress=False)


def test_a_checkpoint_whose_head_does_not_fit_its_classes_names_both(trained, tmp_path, capsys):
    _, checkpoint = trained
    state = torch.load(checkpoint, weights_only=True)
    state["classes"] = ["neutral", "happy", "sad", "angry", "fear", "disgust"]
    torch.save(state, tmp_path / "edited.pt")
    wav = write_audio(tmp_path / "x.wav", tone(seconds=1.0))
    assert main(["predict", str(tmp_path / "edited.pt"), wav, "--no-cache"]) == 2
    error = capsys.readouterr().err
    assert "has 4 outputs (the 4-class setup: ['neutral', 'happy', 'sad', 'angry'])" in error
    assert "it lists 6 classes ['neutral', 'happy', 'sad', 'angry', 'fear', 'disgust']" in error


def test_other_formats_are_decoded_or_rejected_with_the_reason_and_odd_links_are_reported(tmp_path):
    folder = tmp_path / "corpus" / "happy" / "spk"
    folder.mkdir(parents=True)
    y = tone(220, seconds=1.0)
    soundfile.write(folder / "a.ogg", y, 16000, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "b.mp3", y, 16000, format="MP3")
    (folder / "c.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    scan = scan_corpus("folder", tmp_path / "corpus")
    assert sorted(u.stem for u in scan.utterances) == ["a", "b", "c"]
    reasons = dict(scan.unmatched)
    assert "symlink loop" in reasons[str(folder / "loop")] and "broken symlink" in reasons[str(folder / "gone.wav")]
    result = build_image_dataset(scan.utterances, tmp_path / "tree", SMALL, workers=1, progress=False)
    assert result.written == 2
    (rejected,) = _rejected(tmp_path / "tree")
    assert rejected["path"].endswith("c.m4a") and "cannot decode" in rejected["reason"]


def test_clips_near_silence_and_dc_are_flagged_and_can_be_rejected(tmp_path, caplog):
    sounds = {"clip": tone(seconds=0.05), "quiet": tone(seconds=1.0, amplitude=1e-4),
              "dc": np.full(16000, 0.5, np.float32) + tone(seconds=1.0, amplitude=0.01), "fine": tone(seconds=1.0)}
    utterances = [Utterance(write_audio(tmp_path / f"{name}.wav", y), "c", "c-s", "happy", "en") for name,
                  y in sounds.items()]
    warned = build_image_dataset(utterances, tmp_path / "warn", SMALL, workers=1, progress=False)
    assert warned.written == 4 and not warned.rejected
    for problem in ("only 0.05 s of sound", "near-silent: -83 dBFS", "mostly a DC offset"):
        assert problem in caplog.text
    strict = FeatureConfig(image=ImageConfig(size=32), quality=QualityConfig(action="reject"))
    result = build_image_dataset(utterances, tmp_path / "reject", strict, workers=1, progress=False)
    assert result.written == 1
    assert sorted(r["path"].rsplit("/", 1)[1] for r in _rejected(tmp_path / "reject")) == ["clip.wav", "dc.wav",
                                                                                           "quiet.wav"]
