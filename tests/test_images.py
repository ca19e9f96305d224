import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from spectro.config import FeatureConfig, ImageConfig
from spectro.corpora import scan_corpus
from spectro.errors import DataError
from spectro.image_tree import read_feature_settings, read_image_manifest, recording_key, window_file
from spectro.images import build_image_dataset

SMALL = FeatureConfig(image=ImageConfig(size=64))


@pytest.fixture
def utterances(synth_corpus):
    return scan_corpus("synth", synth_corpus).utterances[:12]


def _snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*.png"))}


def test_writes_imagefolder_tree_with_manifest_and_settings(tmp_path, utterances):
    out = tmp_path / "images"
    result = build_image_dataset(utterances, out, SMALL, workers=2, progress=False)
    assert (result.written, result.skipped, result.rejected) == (12, 0, [])
    for utt in utterances:
        png = out / window_file(recording_key(utt), 0, True)
        assert png.parent.name == utt.emotion and png.name.startswith(f"synth__{utt.speaker}__")
        with Image.open(png) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
    rows = read_image_manifest(out)
    assert sorted(u.path for _, u in rows) == sorted(u.path for u in utterances)
    assert all(path.with_name(path.name + "__w000.png").is_file() for path, _ in rows)
    assert read_feature_settings(out) == SMALL


def test_second_run_does_no_work_and_touches_nothing(tmp_path, utterances):
    out = tmp_path / "images"
    build_image_dataset(utterances, out, SMALL, workers=2, progress=False)
    before = _snapshot(out)
    result = build_image_dataset(utterances, out, SMALL, workers=2, progress=False)
    assert (result.written, result.skipped) == (0, 12)
    assert _snapshot(out) == before


def test_resume_redoes_missing_and_partial_images_only(tmp_path, utterances):
    out = tmp_path / "images"
    build_image_dataset(utterances, out, SMALL, workers=1, progress=False)
    reference = _snapshot(out)
    lost = out / window_file(recording_key(utterances[0]), 0, True)
    lost.unlink()
    partial = lost.parent / f".{lost.name}.abc.tmp"  # what a killed write leaves behind
    partial.write_bytes(b"\x89PNG half")
    result = build_image_dataset(utterances, out, SMALL, workers=1, progress=False)
    assert (result.written, result.skipped) == (1, 11)
    assert not partial.exists()
    assert lost.read_bytes() == reference[lost][1]


def test_bad_files_are_rejected_with_reason_and_the_rest_written(tmp_path, utterances):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    bad = [type(utterances[0])(path=str(broken), corpus="synth", speaker="synth-x01f", emotion="sad",
                               language="synth-a", gender="female"),
           type(utterances[0])(path=str(tmp_path / "gone.wav"), corpus="synth", speaker="synth-x01f",
                               emotion="sad", language="synth-a", gender="female")]
    out = tmp_path / "images"
    result = build_image_dataset([*utterances, *bad], out, SMALL, workers=2, progress=False)
    assert result.written == 12 and len(result.rejected) == 2
    with open(out / "rejected.csv", newline="") as handle:
        rejected = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert "cannot decode" in rejected[str(broken)] and "no such file" in rejected[str(tmp_path / "gone.wav")]
    assert len(read_image_manifest(out)) == 12

    # A rerun does not retry unchanged bad files, but still reports them...
    again = build_image_dataset([*utterances, *bad], out, SMALL, workers=2, progress=False)
    assert (again.written, again.skipped, len(again.rejected)) == (0, 12, 2)
    # ...and retries a file once it has been replaced.
    os.utime(out / "rejected.csv", (1, 1))
    shutil.copy(utterances[0].path, broken)
    fixed = build_image_dataset([*utterances, *bad], out, SMALL, workers=1, progress=False)
    assert (fixed.written, len(fixed.rejected)) == (1, 1)


def test_parallel_and_serial_runs_write_identical_images(tmp_path, utterances):
    build_image_dataset(utterances, tmp_path / "one", SMALL, workers=1, progress=False)
    build_image_dataset(utterances, tmp_path / "two", SMALL, workers=2, progress=False)
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*.png")}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*.png")}
    assert one == two


def test_serial_run_leaves_the_callers_thread_limits_alone(tmp_path, utterances):
    """Rendering in-process must not leave a training step after it (the demo) on one thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(2):
        build_image_dataset(utterances[:2], tmp_path / "images", SMALL, workers=1, progress=False)
        assert {pool["num_threads"] for pool in threadpool_info()} == {2}


def test_refuses_to_mix_feature_settings_in_one_tree(tmp_path, utterances):
    out = tmp_path / "images"
    build_image_dataset(utterances[:2], out, SMALL, workers=1, progress=False)
    other = FeatureConfig(image=ImageConfig(size=64, channels="grey"))
    with pytest.raises(DataError, match="image.channels: 'deltas' there, 'grey' now"):
        build_image_dataset(utterances, out, other, workers=1, progress=False)
    assert json.loads((out / "features.json").read_text())["features"]["image"]["channels"] == "deltas"


def test_manifest_accumulates_runs_into_the_same_tree(tmp_path, utterances):
    out = tmp_path / "images"
    build_image_dataset(utterances[:5], out, SMALL, workers=1, progress=False)
    build_image_dataset(utterances[5:], out, SMALL, workers=1, progress=False)
    assert len(read_image_manifest(out)) == 12


def test_images_differ_between_emotions(tmp_path, utterances):
    build_image_dataset(utterances, tmp_path / "i", SMALL, workers=1, progress=False)
    arrays = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "i").rglob("*.png")}
    assert len({a.tobytes() for a in arrays.values()}) == len(arrays)
