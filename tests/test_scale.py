"""Training at scale: packed trees, the streaming loader, gradient accumulation, precision, several
processes under torchrun, and exact resume for every kind of model and sampler."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import fit, run_config
from test_train import _signal_on_call

from spectro.checkpoint_file import load_checkpoint
from spectro.config import FeatureConfig, from_dict
from spectro.corpora import scan_corpus
from spectro.data import ImageSet
from spectro.image_tree import load_recording, load_window, read_image_manifest, save_window
from spectro.images import build_image_dataset
from spectro.training import TrainingStopped

SMALL = {"image": {"size": 32}}


@pytest.fixture(scope="module")
def trees(synth_corpus, tmp_path_factory):
    """Image and MFCC trees of one small corpus (3 s windows), and frame descriptors of whole utterances."""
    root = tmp_path_factory.mktemp("scale")
    utterances = scan_corpus("synth", synth_corpus).utterances
    for name, settings in (("mel", SMALL), ("mfcc", {"feature": "mfcc"}), ("frames", {"feature": "frames",
                                                                                      "audio": {"duration": None}})):
        build_image_dataset(utterances, root / name, from_dict(FeatureConfig, settings), workers=1, progress=False)
    return root


# A model whose steps do not depend on how a batch is cut: no batch normalisation, no dropout, no masks.
# Then accumulation and several processes must reproduce one process's steps up to float rounding.
CUT_FREE = {"model": "mfcc_cnn1", "augment": {"time_masks": 0, "freq_masks": 0}}


def cut_free(trees, tmp_path, name="r", **train) -> dict:
    data = run_config([str(trees / "mfcc")], tmp_path, name=name, model=CUT_FREE["model"], augment=CUT_FREE["augment"],
                  train={"epochs": 3, "class_balance": "sampler", **train})
    data["model"]["drop_rate"] = 0.0
    return data


def test_the_packed_copy_holds_every_window_and_follows_changes_to_the_tree(trees, tmp_path):
    import shutil

    tree = tmp_path / "mel"
    shutil.copytree(trees / "mel", tree)
    rows = read_image_manifest(tree)
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], ("neutral", "happy", "sad", "angry", "fear",
                                                                   "disgust"),
                      progress=False)
    stored, _, _ = images.stored(torch.arange(images.n_windows))
    expected = np.concatenate([load_recording(p) for p, _ in rows])
    np.testing.assert_array_equal(stored["image"].numpy(), expected)
    # a re-rendered file (new pixels) is seen by the next reader, which rebuilds the copy
    first = rows[0][0]
    window = first.with_name(first.name + "__w000.png")
    changed = 255 - load_window(window)
    time.sleep(0.01)
    save_window(changed, window)
    again = ImageSet([first], [rows[0][1]], images.classes, progress=False)
    np.testing.assert_array_equal(again.stored(torch.arange(again.n_windows))[0]["image"].numpy()[0], changed)


def test_sequence_batches_are_padded_to_their_own_longest_window(trees):
    rows = read_image_manifest(trees / "frames")
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], ("neutral", "happy", "sad", "angry", "fear",
                                                                   "disgust"),
                      progress=False)
    lengths = images.lengths["image"]
    short = torch.argsort(lengths)[:2]
    stored, batch_lengths, _ = images.stored(short)
    assert stored["image"].shape[-1] == int(lengths[short].max()) < int(lengths.max())
    assert torch.equal(batch_lengths["image"], lengths[short])


def test_loader_workers_change_nothing_but_speed(trees, tmp_path):
    inline = fit(run_config([str(trees / "mel")], tmp_path / "a", train={"workers": 0}))
    assert fit(run_config([str(trees / "mel")], tmp_path / "b", train={"workers": 2})) == inline


def test_accumulating_two_half_batches_takes_the_steps_of_one_whole_batch(trees, tmp_path):
    whole = fit(cut_free(trees, tmp_path / "a", batch_size=4))
    halves = fit(cut_free(trees, tmp_path / "b", batch_size=2, accumulate=2))
    for key in ("accuracy", "uar"):
        assert halves["validation"][key] == whole["validation"][key]
    assert halves["validation"]["loss"] == pytest.approx(whole["validation"]["loss"], abs=1e-5)
    single_steps = fit(cut_free(trees, tmp_path / "c", batch_size=2))  # half batches, a step after each
    assert single_steps["validation"]["loss"] != pytest.approx(whole["validation"]["loss"], abs=1e-5)


def test_precision_bf16_trains_and_validates_under_autocast(trees, tmp_path, monkeypatch):
    import spectro.scoring as scoring
    import spectro.training.loop as loop

    seen = []
    for module in (loop, scoring):
        real = module.forward

        def recording(*args, _real=real, **kwargs):
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "forward", recording)
    fit(run_config([str(trees / "mel")], tmp_path, train={"precision": "bf16", "epochs": 1}))
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)
    seen.clear()
    fit(run_config([str(trees / "mel")], tmp_path, name="fp32", train={"epochs": 1}))
    assert seen and not any(seen)  # auto on a CPU: full precision


@pytest.mark.parametrize("kind", ["lstm", "fusion", "sampler"])
def test_a_stop_mid_epoch_resumes_exactly_for_each_model_and_sampler(trees, tmp_path, monkeypatch, kind):
    if kind == "lstm":
        data = run_config([str(trees / "frames")], tmp_path / "a", model="lstm")
    elif kind == "fusion":
        data = run_config([{"mel": str(trees / "mel"), "mfcc": str(trees / "mfcc")}], tmp_path / "a",
                          model="tiny_fusion")
    else:
        data = run_config([str(trees / "mel")], tmp_path / "a", train={"class_balance": kind})
    reference = fit(data)
    restore = _signal_on_call(monkeypatch, call=9, signals=[signal.SIGTERM])  # epoch 2 of 6 batches, mid-way
    data["run"] = {**data["run"], "checkpoint_dir": str(tmp_path / "b" / "ck"), "log_dir": str(tmp_path / "b" / "runs")}
    with pytest.raises(TrainingStopped, match="after epoch 1, batch 3"):
        fit(data)
    restore()
    assert fit(data, resume=True) == reference


def _torchrun(config_path, *args, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "spectro", "train", str(config_path), "--quiet", *args]


def test_no_flag_of_spectro_train_is_taken_by_torchruns_own_parser():
    """torchrun reads abbreviations of its flags anywhere on its command line: `--run` stops it at once, as
    ambiguous between --run-path and --run_path. Every flag of `spectro train` must be no prefix of its flags."""
    from torch.distributed.run import get_args_parser

    from spectro.cli import build_parser

    theirs = {o for a in get_args_parser()._actions for o in a.option_strings} - {"-h", "--help"}
    commands = next(a for a in build_parser()._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    train = commands.choices["train"]
    ours = {o for a in train._actions for o in a.option_strings if o not in ("-h", "--help", "--run")}
    assert "--run-name" in ours
    assert not [(o, t) for o in ours for t in theirs if t.startswith(o)]
    assert [t for t in theirs if t.startswith("--run")]  # why --run itself is no use there


def test_two_processes_under_torchrun_train_as_one_and_resume(trees, tmp_path):
    """Two gloo processes, each taking half of every batch of 4, against one process: the same steps, so
    the same validation accuracy and UAR and a validation loss within 1e-4 (float sums in another order)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    paths = {}
    for name in ("one", "killed"):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cut_free(trees, tmp_path, name=name, epochs=4)))
    subprocess.run([sys.executable, "-m", "spectro", "train", str(paths["one"]), "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # the run named on torchrun's own command line, as users write it (the config names another run)
    subprocess.run(_torchrun(paths["killed"], "--run-name", "two"), check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    one, two = (json.loads((tmp_path / "ck" / n / "summary.json").read_text()) for n in ("one", "two"))
    for key in ("accuracy", "uar", "macro_f1"):
        assert two["validation"][key] == one["validation"][key]
    assert two["validation"]["loss"] == pytest.approx(one["validation"]["loss"], abs=1e-4)
    assert two["best_epoch"] == one["best_epoch"]
    assert sorted(p.name for p in (tmp_path / "ck" / "two").iterdir() if not p.name.startswith(".")) == \
        ["best.pt", "config.yaml", "last.pt", "summary.json"]  # rank 0 alone writes
    assert len({p.name.rsplit(".", 2)[-2] for p in (tmp_path / "runs" / "two").glob("events.out.tfevents.*")}) == 1

    # killed after its first epoch's checkpoint, then resumed by two processes again
    last = tmp_path / "ck" / "killed" / "last.pt"
    process = subprocess.Popen(_torchrun(paths["killed"]), env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert load_checkpoint(last)["epoch"] < 4, "the run finished before it could be killed"
    subprocess.run(_torchrun(paths["killed"], "--resume"), check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    resumed = json.loads((tmp_path / "ck" / "killed" / "summary.json").read_text())
    assert resumed["validation"] == two["validation"] and resumed["test"] == two["test"]
