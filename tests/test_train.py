import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import fit

from spectro.checkpoint_file import load_checkpoint, save_checkpoint
from spectro.config import ExperimentConfig, FeatureConfig, ImageConfig, from_dict, load_experiment
from spectro.corpora import scan_corpus
from spectro.data import EpochSampler
from spectro.errors import ConfigError, DataError
from spectro.images import build_image_dataset
from spectro.training import TrainingStopped, start_run
from spectro.training.optim import lr_factor, sample_weights
from spectro.training.state import seed_for


@pytest.fixture(scope="module")
def image_tree(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trees") / "synth"
    build_image_dataset(scan_corpus("synth", synth_corpus).utterances, out,
                        FeatureConfig(image=ImageConfig(size=32)), workers=1, progress=False)
    return out


def tiny_config(tree, tmp_path, **train) -> dict:
    return {
        "data": {"train": [str(tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False},
        "train": {"epochs": 3, "batch_size": 4, "freeze_epochs": 1, **train},
        "run": {"name": "tiny", "checkpoint_dir": str(tmp_path / "checkpoints"), "log_dir": str(tmp_path / "runs")},
    }


def prepared(data: dict):
    """A run with its data split and its model, optimiser and loss built, as `fit` builds them."""
    return start_run(from_dict(ExperimentConfig, data), progress=False)


def draw_order(run, epoch: int) -> torch.Tensor:
    """The training windows of `epoch`, in the order the run's sampler draws them."""
    sampler = EpochSampler(run.splits.train.n_windows, run.config.train.batch_size,
                           seed=seed_for(run.config.train.seed, epoch, 0), weights=run.weights)
    return torch.cat(list(sampler))


def test_training_writes_checkpoints_summary_and_tensorboard(image_tree, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = fit(tiny_config(image_tree, tmp_path))
    run = tmp_path / "checkpoints" / "tiny"
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / name, weights_only=True)
        assert {"model", "epoch", "classes", "config", "inputs"} <= set(state)
        assert state["classes"] == ["neutral", "happy", "sad", "angry"]
        assert state["inputs"]["image"]["image"]["size"] == 32
    # last.pt resumes, so it carries the optimisation state; best.pt only predicts, so it does not
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(torch.load(run / "last.pt", weights_only=True))
    assert not {"optimizer", "scheduler", "scaler", "rng"} & set(torch.load(run / "best.pt", weights_only=True))
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert summary["best_epoch"] == load_checkpoint(run / "best.pt")["epoch"]
    assert json.loads((run / "summary.json").read_text()) == summary
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "tiny_efficientnet"

    events = EventAccumulator(str(tmp_path / "runs" / "tiny"), size_guidance={"images": 0, "tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for split in ("train", "val"):
        assert {f"loss/{split}", f"accuracy/{split}", f"uar/{split}", f"macro_f1/{split}"} <= scalars
    assert {"lr/head", "lr/backbone"} <= scalars
    assert len(events.Scalars("uar/val")) == 3
    assert {"examples/train_augmented_image", "confusion/val"} <= set(events.Tags()["images"])
    hparams = EventAccumulator(str(tmp_path / "runs" / "tiny")).Reload()
    assert "_hparams_/session_start_info" in hparams.summary_metadata


def test_a_test_set_sharing_speakers_with_training_is_refused(image_tree, tmp_path):
    data = tiny_config(image_tree, tmp_path)
    data["data"]["test"] = {"same": str(image_tree)}
    with pytest.raises(ConfigError, match="of test same took part in the model.s training data"):
        fit(data)


def test_head_only_epochs_leave_the_backbone_untouched(image_tree, tmp_path):
    import timm

    weights = tmp_path / "pretrained.pth"  # stands in for ImageNet weights
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    data = tiny_config(image_tree, tmp_path, epochs=1, freeze_epochs=1)
    data["model"]["weights"] = str(weights)
    fit(data)
    trained = torch.load(tmp_path / "checkpoints" / "tiny" / "last.pt", weights_only=True)["model"]
    initial = prepared(data).net.state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])
               and "running_" not in k and "num_batches" not in k}  # BatchNorm statistics still adapt
    assert changed == {"net.classifier.weight", "net.classifier.bias"}


def test_a_model_without_pretraining_is_never_frozen(image_tree, tmp_path):
    data = tiny_config(image_tree, tmp_path, epochs=1, freeze_epochs=1)  # no ImageNet weights
    fit(data)
    trained = torch.load(tmp_path / "checkpoints" / "tiny" / "last.pt", weights_only=True)["model"]
    initial = prepared(data).net.state_dict()
    assert not torch.equal(initial["net.conv_stem.weight"], trained["net.conv_stem.weight"])


def _signal_on_call(monkeypatch, *, call: int, signals: list[int]):
    """Send `signals` to this process right after the forward pass of training batch number `call`."""
    import spectro.training.loop as train_module

    real, calls = train_module.forward, {"n": 0}

    def forward_then_signal(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == call:
            for number in signals:
                os.kill(os.getpid(), number)
        return out

    monkeypatch.setattr(train_module, "forward", forward_then_signal)
    return lambda: monkeypatch.setattr(train_module, "forward", real)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_batch_saves_after_that_batch_and_resume_equals_the_uninterrupted_run(
        image_tree, tmp_path, monkeypatch, number):
    reference = fit(tiny_config(image_tree, tmp_path / "a"))
    # 24 training images, 6 batches per epoch: call 11 is epoch 2, batch index 4, between forward and backward
    restore = _signal_on_call(monkeypatch, call=11, signals=[number])
    with pytest.raises(TrainingStopped, match="after epoch 1, batch 5; continue with the same command and --resume"):
        fit(tiny_config(image_tree, tmp_path / "b"))
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "tiny" / "last.pt")
    assert (saved["epoch"], saved["batch"]) == (1, 5)
    restore()
    assert fit(tiny_config(image_tree, tmp_path / "b"), resume=True) == reference


def test_a_second_ctrl_c_stops_at_once_and_resume_is_still_exact(image_tree, tmp_path, monkeypatch):
    reference = fit(tiny_config(image_tree, tmp_path / "a"))
    restore = _signal_on_call(monkeypatch, call=11, signals=[signal.SIGINT, signal.SIGINT])
    with pytest.raises(KeyboardInterrupt) as stopped:
        fit(tiny_config(image_tree, tmp_path / "b"))
    assert not isinstance(stopped.value, TrainingStopped)
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "tiny" / "last.pt")
    assert (saved["epoch"], saved["batch"]) == (1, 0)  # the last whole state: the end of epoch 1
    restore()
    assert fit(tiny_config(image_tree, tmp_path / "b"), resume=True) == reference


def test_a_second_training_of_one_run_is_refused_while_the_first_runs(image_tree, tmp_path):
    config = tiny_config(image_tree, tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "checkpoints" / "tiny"
    first = subprocess.Popen([sys.executable, "-m", "spectro", "train", str(tmp_path / "c.yaml"), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (run_dir / ".lock").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    try:
        with pytest.raises(DataError, match=rf"in use by spectro train \(PID {first.pid}\)"):
            fit(config)
    finally:
        assert first.wait(120) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 3


def test_sigkill_mid_epoch_then_resume_ends_with_the_same_metrics(image_tree, tmp_path):
    # The reference runs the same way, in its own process: floating-point results can differ in the
    # last digits between a fresh process and one that has already run other tests.
    for name in ("whole", "killed"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tiny_config(image_tree, tmp_path / name, epochs=4)))
    train = [sys.executable, "-m", "spectro.cli", "train"]
    subprocess.run(train + [str(tmp_path / "whole.yaml"), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    reference = json.loads((tmp_path / "whole" / "checkpoints" / "tiny" / "summary.json").read_text())

    command = train + [str(tmp_path / "killed.yaml"), "--quiet"]
    last = tmp_path / "killed" / "checkpoints" / "tiny" / "last.pt"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # right after epoch 1's checkpoint: inside epoch 2
    process.wait()
    assert load_checkpoint(last)["epoch"] < 4, "the run finished before it could be killed"
    subprocess.run(command + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((tmp_path / "killed" / "checkpoints" / "tiny" / "summary.json").read_text())
    assert resumed == reference


def test_existing_run_needs_resume_and_a_finished_run_is_not_redone(image_tree, tmp_path):
    data = tiny_config(image_tree, tmp_path, epochs=1)
    first = fit(data)
    with pytest.raises(ConfigError, match="pass --resume"):
        fit(data)
    best = tmp_path / "checkpoints" / "tiny" / "best.pt"
    before = best.stat().st_mtime_ns
    assert fit(data, resume=True) == first
    assert best.stat().st_mtime_ns == before


def test_resume_with_changed_settings_is_refused(image_tree, tmp_path, monkeypatch):
    data = tiny_config(image_tree, tmp_path)
    restore = _signal_on_call(monkeypatch, call=2, signals=[signal.SIGINT])
    with pytest.raises(TrainingStopped):
        fit(data)
    restore()
    data["optim"] = {"lr": 0.5}
    with pytest.raises(ConfigError, match="written with another config"):
        fit(data, resume=True)


def test_config_file_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: [x]\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting train\.epoch;"):
        load_experiment(path)
    with pytest.raises(ConfigError, match=r"model.name='resnet51' must be one of"):
        load_experiment(path, ["train={}", "model.name=resnet51"])
    config = load_experiment(path, ["train={}", "train.epochs=7"])
    assert config.train.epochs == 7 and config.run.name == "bad"


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, cosine=True) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert factors[-1] == pytest.approx(0.0)
    assert lr_factor(15, warmup_steps=4, total_steps=20, cosine=False) == 1.0


def test_missing_training_trees_are_skipped_only_when_asked(image_tree, tmp_path):
    data = tiny_config(image_tree, tmp_path, epochs=1)
    data["data"]["train"].append(str(tmp_path / "no-such-corpus"))
    with pytest.raises(Exception, match="no-such-corpus"):
        fit(data)
    data["data"]["missing_train"] = "skip"
    assert fit(data)["train"] == [str(image_tree)]


@pytest.mark.parametrize("optim, train", [
    ({"optimizer": "sgd", "schedule": "plateau", "lr": 0.01}, {"class_balance": "sampler"}),
    ({"optimizer": "adamw", "schedule": "cosine", "warmup_epochs": 0}, {"class_balance": "none",
                                                                        "label_smoothing": 0.0}),
])
def test_optimiser_schedule_and_balancing_options_train(image_tree, tmp_path, optim, train):
    data = tiny_config(image_tree, tmp_path, epochs=2, freeze_epochs=0, **train)
    data["optim"] = optim
    summary = fit(data)
    assert summary["epochs_run"] == 2
    state = load_checkpoint(tmp_path / "checkpoints" / "tiny" / "last.pt")
    assert state["epoch"] == 2 and state["finished"]
    assert (state["plateau"] is not None) == (optim["schedule"] == "plateau")
    run = prepared(data)
    assert type(run.optim.optimizer) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optim["optimizer"]]
    assert run.optim.loss_fn.label_smoothing == train.get("label_smoothing", 0.1)
    order = draw_order(run, 0)
    if train["class_balance"] == "none":  # every utterance once
        assert sorted(order.tolist()) == list(range(len(run.splits.train)))
    else:  # weighted draws with replacement
        assert len(order) == len(run.splits.train) and len(set(order.tolist())) < len(order)


def test_early_stopping_ends_the_run_and_keeps_the_best_epoch(image_tree, tmp_path):
    data = tiny_config(image_tree, tmp_path, epochs=30, early_stopping_patience=1)
    summary = fit(data)
    assert summary["epochs_run"] < 30
    assert summary["epochs_run"] == summary["best_epoch"] + 1


def test_corpus_balance_draws_every_corpus_and_class_equally(image_tree, tmp_path):
    import dataclasses
    from collections import Counter

    run = prepared(tiny_config(image_tree, tmp_path, class_balance="corpus"))
    # pretend the first 3 training utterances (all angry) come from a second, small corpus: cells of 3 and 6
    train = run.splits.train
    train.utterances = [dataclasses.replace(u, corpus="small") if i < 3 else u for i, u in enumerate(train.utterances)]
    run.weights = sample_weights(train, "corpus")
    cell = [(u.corpus, y) for u, y in zip(train.utterances, train.labels.tolist())]
    assert max(Counter(cell).values()) == 2 * min(Counter(cell).values())  # uneven cells, so the test can fail
    drawn = Counter(cell[i] for epoch in range(200) for i in draw_order(run, epoch).tolist())
    shares = [n / sum(drawn.values()) for n in drawn.values()]
    assert len(drawn) == len(set(cell)) and max(shares) < 1.25 * min(shares)  # equal up to sampling noise


def test_checkpoints_load_only_with_their_inputs_and_old_ones_read_as_single_input(tmp_path):
    mel = {"feature": "mel", "image": {"size": 32}}
    save_checkpoint({"model": {}, "classes": ["a", "b"], "config": {}, "features": mel}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["inputs"] == {"image": mel}
    save_checkpoint({"model": {}, "classes": ["a", "b"], "config": {}}, tmp_path / "bare.pt")
    with pytest.raises(DataError, match=r"not a spectro checkpoint: it lacks \['inputs'\]"):
        load_checkpoint(tmp_path / "bare.pt")
