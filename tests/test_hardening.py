"""What hostile tests and a new user found (issue: hardening): each test here failed before its fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from conftest import fit, run_config, tone, write_audio

from spectro.checkpoint_file import load_checkpoint, save_checkpoint
from spectro.cli import main
from spectro.corpora import iter_audio_files
from spectro.errors import ConfigError, DataError, StorageError
from spectro.image_tree import read_image_manifest
from spectro.manifest import read_manifest


def _damaged_copy(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(b ^ 0xFF for b in data[middle:middle + 2000])
    target.write_bytes(bytes(data))
    return target


def test_a_damaged_checkpoint_is_refused_by_predict_evaluate_and_export(trained, tmp_path, capsys):
    root, checkpoint = trained
    damaged = _damaged_copy(checkpoint, tmp_path / "best.pt")
    wav = write_audio(tmp_path / "clip.wav", tone(seconds=1.0))
    assert main(["predict", str(damaged), wav, "--no-cache"]) == 2
    assert main(["export", str(damaged), "--format", "slim", "--out", str(tmp_path / "slim.pt")]) == 2
    assert main(["evaluate", str(damaged), "--corpus", f"synth={root / 'b'}", "--out", str(tmp_path / "e")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(f"{damaged}' is damaged" in line for line in errors)
    assert not (tmp_path / "slim.pt").exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("content, says", [
    (b"", "empty (0 bytes)"), (b"101\n", "a text file"), (os.urandom(4000), "unrecognised binary data"),
    (json.dumps({"spectro_ensemble": 1, "members": []}).encode(), "an ensemble file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "a WAV audio file"), (b"\x08\x07\x12\x07pytorch onnx", "an ONNX graph"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_looks_like_never_torchs_advice(tmp_path, content, says):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_checkpoint(path)
    assert "not a spectro checkpoint" in str(caught.value) and says in str(caught.value)
    assert "weights_only" not in str(caught.value)


def test_a_pickled_payload_is_refused_without_torchs_advice(tmp_path):
    import argparse

    torch.save({"model": {}, "classes": [], "config": {}, "payload": argparse.Namespace(run="code")}, tmp_path / "p.pt")
    with pytest.raises(DataError, match="argparse.Namespace") as caught:
        load_checkpoint(tmp_path / "p.pt")
    assert "weights_only" not in str(caught.value)


def test_export_refuses_an_untrusted_type_in_a_baselines_pipeline_and_an_ensemble_file(tmp_path, capsys):
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from spectro.models import create_model

    model = create_model("svm", 2)
    model.pipeline, model.fitted = Pipeline([("f", FunctionTransformer(os.system))]), True
    state = {"model": model.state_dict(), "classes": ["a", "b"], "model_name": "svm", "config": {"run": {"name": "x"}},
             "inputs": {"image": {"feature": "stats"}}}
    assert b"posix" in skops.io.dumps(model.pipeline)
    save_checkpoint(state, tmp_path / "svm.pt")
    assert main(["export", str(tmp_path / "svm.pt"), "--format", "slim", "--out", str(tmp_path / "slim.pt")]) == 2
    assert "posix.system" in capsys.readouterr().err and not (tmp_path / "slim.pt").exists()
    (tmp_path / "e.json").write_text(json.dumps({"spectro_ensemble": 1, "members": []}))
    assert main(["export", str(tmp_path / "e.json"), "--format", "slim", "--out", str(tmp_path / "s.pt")]) == 2
    assert "export takes one checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "x y"])
def test_a_run_name_must_be_one_folder_name_and_nothing_is_written(synth_corpus, tmp_path, capsys, name):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(run_config([str(tmp_path / "tree")], tmp_path)))
    assert main(["train", str(config), "--run-name", name]) == 2
    assert "run.name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_file_names_that_are_not_utf8_are_kept_byte_for_byte_and_nothing_crashes(trained, tmp_path, capsys):
    root = os.fsencode(tmp_path / "corpus")
    folder = os.path.join(root, b"angry", b"spk1")
    os.makedirs(folder)
    odd = os.path.join(folder, b"caf\xe9_latin1.flac")
    soundfile.write(odd, tone(seconds=1.0), 16000)
    soundfile.write(os.path.join(folder, b"plain.flac"), tone(300, seconds=1.0), 16000)
    corpus = os.fsdecode(root)
    assert main(["manifest", "--corpus", f"folder={corpus}", "--out", str(tmp_path / "m.csv")]) == 0
    assert sorted(u.path for u in read_manifest(tmp_path / "m.csv")) == sorted(
        os.fsdecode(os.path.join(folder, n)) for n in (b"caf\xe9_latin1.flac", b"plain.flac"))
    assert main(["images", "--corpus", f"folder={corpus}", "--out", str(tmp_path / "tree"), "--set", "image.size=32",
                 "--quiet"]) == 0
    rows = read_image_manifest(tmp_path / "tree")
    assert len(rows) == 2 and os.fsdecode(odd) in {u.path for _, u in rows}
    capsys.readouterr()
    assert main(["predict", str(trained[1]), corpus, "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(results) == 2 and all("label" in r for r in results)


def test_ctrl_c_says_how_to_continue_and_a_broken_pipe_is_quiet(trained, tmp_path, monkeypatch, capsys):
    import spectro.images as images

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "build_image_dataset", interrupted)
    assert main(["images", "--corpus", f"synth={trained[0] / 'b'}", "--out", str(tmp_path / "t"), "--quiet"]) == 130
    assert "interrupted; run the same command again" in capsys.readouterr().err
    wav = write_audio(tmp_path / "clip.wav", tone(seconds=1.0))
    reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE)
    predict = subprocess.run([sys.executable, "-m", "spectro", "predict", str(trained[1]), wav, wav, "--segments"],
                             stdout=reader.stdin, stderr=subprocess.PIPE, text=True)
    reader.wait()
    assert "Broken pipe" not in predict.stderr and "Traceback" not in predict.stderr


@pytest.mark.parametrize("value, says", [
    ("run.name=[unclosed", "is not valid YAML"),
    ("run.name=!!python/object/apply:os.system ['true']", "never loads"),
])
def test_a_malformed_or_tagged_set_value_is_a_clear_error(tmp_path, capsys, value, says):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(run_config([str(tmp_path)], tmp_path)))
    assert main(["config", "show", str(config), "--set", value]) == 2
    error = capsys.readouterr().err
    assert says in error and "Traceback" not in error


def test_a_billion_laughs_config_is_refused_at_once(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert main(["config", "show", str(tmp_path / "bomb.yaml")]) == 2
    assert "expands to more than" in capsys.readouterr().err


def test_a_link_to_the_root_is_not_walked_and_a_linked_speaker_folder_is_kept(tmp_path):
    corpus = tmp_path / "corpus" / "happy"
    for name, folder in (("spk1", corpus / "spk1"), ("spk2", tmp_path / "elsewhere" / "spk2")):
        for i in range(3):
            write_audio(folder / f"{name}_{i}.wav", tone(seconds=0.3))
    (corpus / "root").symlink_to("/")
    (corpus / "spk2").symlink_to(tmp_path / "elsewhere" / "spk2")
    (corpus / "spk1" / "up").symlink_to(corpus)
    skipped = []
    found = sorted(p.name for p in iter_audio_files(tmp_path / "corpus", skipped))
    assert found == [f"spk{s}_{i}.wav" for s in (1, 2) for i in range(3)]
    reasons = {Path(path).name: reason for path, reason in skipped}
    assert "filesystem root" in reasons["root"] and "symlink loop" in reasons["up"]


def test_a_full_disk_while_saving_a_checkpoint_is_a_storage_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    import contextlib
    import errno

    import spectro.checkpoint_file as checkpoint_file

    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(10)}}, path)
    before, real_open = path.read_bytes(), checkpoint_file.atomic_open

    class FillingDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            self.written += len(memoryview(data))
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    @contextlib.contextmanager
    def filling(target, mode="w", **kwargs):
        with real_open(target, mode, **kwargs) as handle:
            yield FillingDisk(handle)

    monkeypatch.setattr(checkpoint_file, "atomic_open", filling)
    with pytest.raises(StorageError, match=rf"cannot write {path}: No space left on device.*--resume"):
        save_checkpoint({"model": {"w": torch.zeros(100000)}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("content, says", [
    ('{"spectro_ensemble": 1, "members": [', "not valid JSON"),
    ('{"spectro_ensemble": 1, "classes": ["a", "b"], "members": [{"weight": 1}]}', "member 1 must be"),
    ('{"spectro_ensemble": 1, "classes": ["a", "b"], "members": [{"checkpoint": "x.pt", "weight": -1}]}',
     "weight >= 0"),
    ('{"spectro_ensemble": 1, "classes": "ab", "members": []}', "'classes' must list"),
    ('[1, 2]', "not an ensemble file"),
])
def test_a_malformed_ensemble_file_is_refused_field_by_field(tmp_path, capsys, content, says):
    (tmp_path / "e.json").write_text(content)
    wav = write_audio(tmp_path / "clip.wav", tone(seconds=1.0))
    assert main(["predict", str(tmp_path / "e.json"), wav]) == 2
    error = capsys.readouterr().err
    assert says in error and "Traceback" not in error


def test_an_ensemble_whose_classes_disagree_with_its_members_is_refused(trained, tmp_path, capsys):
    from spectro.ensemble_file import Member, write_ensemble

    write_ensemble(tmp_path / "e.json", [Member(str(trained[1]), 1.0)], classes=["a", "b", "c", "d"], chosen_by={})
    wav = write_audio(tmp_path / "clip.wav", tone(seconds=1.0))
    assert main(["predict", str(tmp_path / "e.json"), wav]) == 2
    assert "the file names the classes ['a', 'b', 'c', 'd']" in capsys.readouterr().err


def test_two_runs_of_one_name_in_different_checkpoint_dirs_do_not_share_a_tensorboard_folder(trained, tmp_path):
    data = run_config([str(trained[0] / "tree_a")], tmp_path, name="same", train={"epochs": 1})
    fit(data)
    data["run"]["checkpoint_dir"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match="holds the logs of the run"):
        fit(data)
    assert not (tmp_path / "other" / "same").exists()


@pytest.mark.parametrize("argv, says", [
    (["--classes", "neutral,hapy,sad"], "class(es) ['hapy'] match no label"),
    (["--classes", "angry,joy"], "class(es) ['joy'] match no label"),
    (["--map", "joy=happy"], "--map source(s) ['joy']"),
])
def test_a_class_or_mapping_that_matches_no_label_is_an_error_naming_the_labels(synth_corpus, tmp_path, capsys, argv,
                                                                               says):
    assert main(["manifest", "--corpus", f"synth={synth_corpus}", "--out", str(tmp_path / "m.csv"), *argv]) == 2
    error = capsys.readouterr().err
    assert says in error and "'angry', 'happy', 'neutral', 'sad'" in error
    assert not (tmp_path / "m.csv").exists()


def test_the_distribution_has_a_name_free_on_pypi_in_setup_and_every_hint():
    import configparser

    import spectro

    setup = configparser.ConfigParser()
    setup.read(Path(spectro.__file__).parent.parent / "setup.cfg")
    assert setup["metadata"]["name"] == "spectro-ser"
    hints = [line for p in Path(spectro.__file__).parent.rglob("*.py") for line in p.read_text().splitlines()
             if "pip install" in line]
    assert hints and all("spectro-ser[" in line for line in hints if "spectro[" in line or "spectro-ser" in line)
    assert not [line for line in hints if "'spectro[" in line]


def test_predictor_predict_takes_a_path(trained, tmp_path):
    from spectro import Predictor

    wav = write_audio(tmp_path / "clip.wav", tone(seconds=1.0))
    predictor = Predictor.load(trained[1], cache=False)
    y, sr = soundfile.read(wav, dtype="float32")
    by_path, by_samples = predictor.predict(wav), predictor.predict(y, sr)
    assert by_path.probabilities == pytest.approx(by_samples.probabilities, abs=1e-6)
    with pytest.raises(ConfigError, match="leave out sample_rate"):
        predictor.predict(wav, 16000)


def test_a_failed_evaluate_leaves_no_output_folder(trained, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(trained[1]), "--corpus", f"emodb={tmp_path / 'nowhere'}", "--out", str(out)]) == 2
    assert not out.exists()


def test_a_file_given_directly_and_through_its_folder_is_scored_once(trained, tmp_path, capsys):
    wav = write_audio(tmp_path / "in" / "clip.wav", tone(seconds=1.0))
    assert main(["predict", str(trained[1]), wav, str(tmp_path / "in"), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_every_command_with_a_model_takes_device_and_quiet():
    from spectro.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in ("train", "evaluate", "ensemble", "predict", "listen", "export", "demo"):
        options = {o for a in commands[name]._actions for o in a.option_strings}
        assert {"--device", "--quiet"} <= options, name


def test_reproduce_table_help_is_help_not_a_corpus():
    script = Path(__file__).parent.parent / "scripts" / "reproduce_table.sh"
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "Reproduce the published comparison table" in shown.stdout
    wrong = subprocess.run(["bash", str(script), "ravdess"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "is not NAME=PATH" in wrong.stderr


def test_the_report_cites_the_published_column_by_its_repository(tmp_path):
    from spectro.report import PUBLISHED_SOURCE

    assert "KanikeSaiPrakash/Speech-Emotion-Recognition" in PUBLISHED_SOURCE and "Table 1" in PUBLISHED_SOURCE


def test_a_long_recording_becomes_one_224_picture_per_window_that_imagefolder_reads(tmp_path):
    from torchvision.datasets import ImageFolder

    write_audio(tmp_path / "corpus" / "happy" / "spk1" / "long.wav", tone(220, seconds=7.0))
    write_audio(tmp_path / "corpus" / "sad" / "spk1" / "short.wav", tone(330, seconds=1.0))
    assert main(["images", "--corpus", f"folder={tmp_path / 'corpus'}", "--out", str(tmp_path / "tree"),
                 "--quiet"]) == 0
    folder = ImageFolder(str(tmp_path / "tree"))
    shapes = {tuple(np.asarray(image).shape) for image, _ in folder}
    assert len(folder) == 4 + 1 and shapes == {(224, 224, 3)}  # 7 s: 3 s windows at 0, 1.5, 3 and 4 s
    (long_,) = [p for p, u in read_image_manifest(tmp_path / "tree") if u.emotion == "happy"]
    from spectro.image_tree import load_recording

    assert load_recording(long_).shape == (4, 3, 224, 224)
