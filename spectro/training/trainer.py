"""Fine-tuning on spectrogram images: the recipe, safe to interrupt, monitored in TensorBoard.

`Trainer.fit` reads as the recipe: build the splits and the model (`start_run`), train epoch by
epoch keeping the checkpoint with the best validation UAR, then score the test corpora with it
(`train_and_test`). Each epoch's data order, augmentation and dropout draw from generators seeded by
(seed, epoch), and their states travel in every checkpoint, so a resumed run replays exactly what an
uninterrupted one would have done. Under torchrun the same recipe runs in every process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import platform
import sys

import numpy as np
import torch
import yaml
from torch import nn

from .. import __version__
from ..adversarial import DomainBranch
from ..checkpoint_file import load_checkpoint, slim_state
from ..config import ExperimentConfig, to_dict
from ..data import SINGLE_INPUT, ImageSet
from ..errors import ConfigError
from ..fileio import atomic_open
from ..locks import job_lock
from ..metrics import METRIC_NAMES, METRICS, confusion_figure, describe_scores, score_recordings
from ..models import create_model, input_names, is_estimator
from ..scoring import autocast_dtype, check_lengths, predict_proba, resolve_device, scoring_autocast
from .distributed import Distributed
from .estimators import fit_estimator
from .linear_probe import fit_linear_probe
from .loop import rng_states, train_one_epoch, validate
from .optim import Optimisation, build_optimisation, sample_weights
from .run_folder import RunFolder
from .signals import GracefulStop, TrainingStopped
from .splits import Splits, build_splits
from .state import RunState, seed_for

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Run:
    """Everything one training run works with, built by `start_run`."""

    config: ExperimentConfig
    splits: Splits
    net: nn.Module  # the model itself
    model: nn.Module  # what training calls: `net`, wrapped for DistributedDataParallel and/or compiled
    optim: Optimisation | None  # None for scikit-learn baselines, which are fitted in one go
    domain: DomainBranch | None  # domain-adversarial training's branch
    device: torch.device
    dist: Distributed
    folder: RunFolder
    stop: GracefulStop
    in_channels: int | None  # features per frame of a matrix input
    weights: torch.Tensor | None  # the balanced samplers' draw weights; None draws each window once
    probed: dict | None = None  # LP-FT: the weights after the LP stage (pretrained backbone + fitted head)
    progress: bool = True
    state: RunState = dataclasses.field(default_factory=RunState)
    augment_rng: torch.Generator = dataclasses.field(default_factory=torch.Generator)
    saved_rng: list | None = None  # each process's random states, to resume mid-epoch
    writer: object = None  # TensorBoard's SummaryWriter, in the main process only
    micro_batch: int = 0  # batches since the last optimiser step (train.accumulate)
    search: list | None = None  # a baseline's grid-search scores

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def estimator(self) -> bool:
        return self.optim is None

    @property
    def autocast(self) -> torch.dtype | None:
        return None if self.estimator else autocast_dtype(self.config.train.precision, self.device)

    @property
    def channels_last(self) -> bool:
        return self.cuda and self.config.train.channels_last and not self.estimator

    @property
    def scored_model(self) -> nn.Module:
        """What validation, best.pt and the test scores use: the weights' moving average, if kept."""
        return self.optim.ema.module if self.optim is not None and self.optim.ema is not None else self.net

    def description(self) -> dict:
        """What any checkpoint of the run says about it: classes, inputs, config, training data, versions."""
        return {"classes": list(self.splits.classes), "model_name": self.config.model.name,
                "in_channels": self.in_channels, "train_corpora": self.splits.train_corpora,
                "training_record": self.splits.record.as_dict(),
                "transductive": (self.domain.transductive if self.domain is not None else []) + [
                    f"self-training on {n} pseudo-labelled recording(s) of {corpus}'s unlabelled audio"
                    for corpus, n in self.splits.pseudo.items()],
                "pseudo_labelled": self.splits.pseudo, "normalisation": self.splits.normalisation,
                "config": to_dict(self.config), "inputs": {n: to_dict(f) for n, f in self.splits.features.items()},
                "versions": _versions()}

    def full_state(self, epoch: int, batch: int = 0, partial: list | None = None) -> dict:
        """last.pt: everything to resume from after `epoch` epochs and `batch` batches (every process joins)."""
        self.state.epoch, self.state.batch, self.state.partial = epoch, batch, partial
        optimisation = (self.optim.state_dict() if self.optim is not None
                        else dict.fromkeys(("optimizer", "scheduler", "plateau", "scaler", "ema")))
        return {"model": self.net.state_dict(), **optimisation, "rng": rng_states(self),
                "domain_head": self.domain.head.state_dict() if self.domain is not None else None,
                **self.state.state_dict(), **self.description()}

    def inference_state(self, epoch: int) -> dict:
        """best.pt: what predicting needs, with the weights that were scored."""
        return slim_state({**self.state.state_dict(), **self.description(), "epoch": epoch,
                           "model": self.scored_model.state_dict()})

    def restore(self, state: dict) -> None:
        if state["config"] != to_dict(self.config):
            raise ConfigError(f"{self.folder.last} was written with another config; resume with the same "
                              "settings, or start a new run with --set run.name=...")
        if state["batch"] and len(state["rng"]) != self.dist.world:
            raise ConfigError(f"{self.folder.last} was saved mid-epoch by {len(state['rng'])} processes; resume "
                              f"it with as many (now {self.dist.world})")
        self.net.load_state_dict(state["model"])
        if self.optim is not None:
            self.optim.load_state_dict(state)
        if self.domain is not None:
            self.domain.head.load_state_dict(state["domain_head"])
        self.state.load_state_dict(state)
        self.saved_rng = state["rng"] if state["batch"] else None
        log.info("resuming %s at epoch %d, batch %d", self.config.run.name, self.state.epoch + 1, self.state.batch)

    def save_if_asked(self, epoch: int, batch: int, tally, *, every_step: bool) -> None:
        """After an optimiser step: save last.pt if a stop was asked for (then stop) or a recovery point is due.
        Under DistributedDataParallel the processes agree on it together, only every `every_step`."""
        if not every_step:
            return
        flags = self.dist.gather((self.stop.signal is not None, self.folder.recovery_due()))
        stop, due = any(f[0] for f in flags), flags[0][1]
        if stop or due:
            self.folder.save_last(self.full_state(epoch, batch, self.dist.gather(tally.as_partial())))
        if stop:
            self._stopped(f"after epoch {epoch}, batch {batch}")

    def stop_if_asked(self, epoch: int) -> None:
        """At an epoch's end, after last.pt is saved: stop if asked to."""
        if self.dist.any(self.stop.signal is not None):
            self._stopped(f"after epoch {epoch}")

    def _stopped(self, where: str) -> None:
        raise TrainingStopped(f"{self.stop.signal or 'a stop request'}: saved {self.folder.last} {where}; "
                              "continue with the same command and --resume")


class Trainer:
    """Fine-tunes ``config.model`` on ``config.data``; writes checkpoints/<run>/ and runs/<run>/."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = True):
        self.config = config
        self.progress = progress
        self.folder = RunFolder(config.run)
        self.run: Run | None = None

    def fit(self, *, resume: bool = False) -> dict:
        """Train, keep the checkpoint with the best validation UAR, then score the test sets with it.

        The run folder is locked for the whole run. Ctrl-C or SIGTERM finishes the step in hand, saves
        ``last.pt`` and raises `TrainingStopped`; ``fit(resume=True)`` then ends exactly as an
        uninterrupted run would.
        """
        dist = Distributed.from_environment(resolve_device(self.config.train.device))
        try:
            locks = contextlib.ExitStack()
            if dist.main:  # the run folder and its TensorBoard folder, each held for the whole run
                locks.enter_context(job_lock(self.folder.root, "spectro train"))
                locks.enter_context(job_lock(self.folder.logs, "spectro train"))
                self.folder.check_logs()
            with locks, GracefulStop() as stop:
                if self.folder.last.exists() and not resume:
                    raise ConfigError(f"run {self.config.run.name!r} already has {self.folder.last}; pass --resume to "
                                      "continue it, or name a new run with --run-name NAME")
                if resume and self.folder.summary.is_file():
                    log.info("run %s is finished; nothing to redo", self.config.run.name)
                    return json.loads(self.folder.summary.read_text())
                self.run = start_run(self.config, dist=dist, stop=stop, progress=self.progress, resume=resume)
                return train_and_test(self.run)
        finally:
            dist.close()


def start_run(config: ExperimentConfig, *, dist: Distributed | None = None, stop: GracefulStop | None = None,
              progress: bool = True, resume: bool = False) -> Run:
    """The run's data, model and optimiser, restored from last.pt when resuming; nothing is written."""
    dist = dist or Distributed()
    device = dist.place(resolve_device(config.train.device))
    progress = progress and dist.main
    splits = build_splits(config, progress=progress)
    torch.manual_seed(seed_for(config.train.seed, -1, 0))  # the new layers' initial weights
    net, in_channels = _build_model(config, splits, device)
    optim = domain = None
    if dist.active and (is_estimator(net) or config.adversarial.weight):
        raise ConfigError("scikit-learn baselines and domain-adversarial training run in one process; start them "
                          "without torchrun")
    saved = RunFolder(config.run).load_last() if resume else None
    probe = None
    if config.train.lp_ft and saved is None:
        probe = fit_linear_probe(net, splits, config=config, device=device)
    if not is_estimator(net):
        if device.type == "cuda" and config.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if config.adversarial.weight:
            domain = DomainBranch(config, splits.train, next(iter(splits.features.values())), net, device,
                                  progress=progress)
        optim = build_optimisation(net, config, splits.train, device,
                                   extra_params=list(domain.head.parameters()) if domain is not None else [])
    run = Run(config, splits, net, _wrapped(net, config, dist, device), optim, domain, device, dist,
              RunFolder(config.run, main=dist.main, recovery_minutes=config.train.recovery_minutes),
              stop or GracefulStop(), in_channels, sample_weights(splits.train, config.train.class_balance),
              progress=progress)
    if saved is not None:
        run.restore(saved)
    elif probe is not None:
        run.state.linear_probe = probe
        if dist.main:
            print(f"linear probe: C={probe['C']:g}, validation UAR {probe['val_uar']:.3f}", flush=True)
        run.probed = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return run


def _build_model(config: ExperimentConfig, splits: Splits, device: torch.device) -> tuple[nn.Module, int | None]:
    shape = splits.train.window_shape(SINGLE_INPUT) if SINGLE_INPUT in splits.train.windows else ()
    in_channels = shape[0] if len(shape) == 1 else None
    model = create_model(config.model.name, len(splits.classes), pretrained=config.model.pretrained,
                         weights=config.model.weights, drop_rate=config.model.drop_rate,
                         in_channels=in_channels).to(device)
    wanted = list(input_names(model))
    if sorted(wanted) != sorted(splits.features):
        raise ConfigError(f"model {config.model.name!r} reads inputs {wanted}, but the data entries give "
                          f"{sorted(splits.features)}; write each data.train entry as "
                          f"{{{', '.join(f'{n}: TREE' for n in wanted)}}}" if len(wanted) > 1 else
                          f"model {config.model.name!r} reads one input; give each data.train entry as one image tree")
    check_lengths(model, splits.train)
    if (config.model.params or config.model.search) and not is_estimator(model):
        raise ConfigError(f"model.params and model.search apply to scikit-learn baselines, not {config.model.name!r}")
    return model, in_channels


def _wrapped(net: nn.Module, config: ExperimentConfig, dist: Distributed, device: torch.device) -> nn.Module:
    """What training calls: DistributedDataParallel across processes, compiled if asked, tuned cuDNN."""
    if is_estimator(net):
        return net
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.train.cudnn_benchmark
    model = dist.wrap(net, device)
    return torch.compile(model) if config.train.compile else model


def train_and_test(run: Run) -> dict:
    """Epochs (head only first, then the whole network; a baseline is fitted once instead), then,
    only now, the test corpora, scored by the checkpoint chosen on validation data."""
    cfg, state = run.config.train, run.state
    if run.dist.main:
        _open_outputs(run)
        if run.probed is not None:  # the LP model, for WiSE-FT's interpolation (spectro interpolate)
            run.folder.save_lp(slim_state({**run.state.state_dict(), **run.description(), "epoch": 0,
                                           "model": run.probed}))
    try:
        if run.estimator and not state.finished:
            metrics, run.search = fit_estimator(run)
            end_epoch(run, 0, metrics)
        for epoch in range(state.epoch, 0 if run.estimator else cfg.epochs):
            if state.finished:
                break
            partial = state.partial[run.dist.rank] if state.partial else None
            train = train_one_epoch(run, epoch, state.batch, partial, run.saved_rng)
            run.saved_rng = None
            end_epoch(run, epoch, train)
            run.folder.save_last(run.full_state(epoch + 1))
            run.stop_if_asked(epoch + 1)
        state.finished = True
        run.folder.save_last(run.full_state(len(state.history)))
        summary = run.dist.gather(score_tests(run) if run.dist.main else None)[0]
    finally:
        if run.writer is not None:
            run.writer.close()
    if run.dist.main:
        with atomic_open(run.folder.summary) as handle:
            json.dump(summary, handle, indent=2)
    return summary


def _open_outputs(run: Run) -> None:
    """The resolved config beside the checkpoints, and the TensorBoard writer (its later steps dropped on resume)."""
    from torch.utils.tensorboard import SummaryWriter

    config = run.config
    with atomic_open(run.folder.config) as handle:
        yaml.safe_dump({**to_dict(config), "inputs": run.description()["inputs"], "classes": list(run.splits.classes)},
                       handle, sort_keys=False)
    run.folder.claim_logs()
    run.writer = SummaryWriter(str(run.folder.logs),
                               purge_step=run.state.epoch + 1 if run.state.epoch else None)


def end_epoch(run: Run, epoch: int, train: dict) -> None:
    """Validate, step a plateau schedule, keep best.pt, log, and decide whether training is finished."""
    cfg, state, optim = run.config.train, run.state, run.optim
    val, _ = validate(run)
    lrs = [group["lr"] for group in optim.optimizer.param_groups] if optim is not None else [None, None]
    if optim is not None and optim.plateau is not None and optim.scheduler.last_epoch >= optim.warmup_steps:
        optim.plateau.step(val["uar"])
    improved = val["uar"] > state.best["uar"]
    if improved:
        state.best, state.bad_epochs = {"uar": val["uar"], "epoch": epoch + 1}, 0
    else:
        state.bad_epochs += 1
    state.history.append({"epoch": epoch + 1, "lr_head": lrs[0], "lr_backbone": lrs[1],
                          "train": {k: v for k, v in train.items() if k != "confusion"}, "val": val,
                          **({"search": run.search} if run.search else {})})
    early = bool(cfg.early_stopping_patience and state.bad_epochs >= cfg.early_stopping_patience)
    state.finished = early or epoch + 1 == cfg.epochs
    if improved:  # inference needs no optimiser or random state: best.pt is slim
        run.folder.save_best(run.inference_state(epoch + 1))
    if run.dist.main:
        _log_epoch(run, epoch + 1, train, val, lrs)
        when = "fitted" if run.estimator else f"epoch {epoch + 1:3d}/{cfg.epochs}"
        print(f"{when}  train {_brief(train)} | val {_brief(val)}"
              f"{f'  lr {lrs[0]:.2e}' if optim is not None else ''}{'  *best' if improved else ''}"
              f"{'  early stop' if early else ''}", flush=True)


def _brief(metrics: dict) -> str:
    """The loss and the headline metrics of an epoch, briefly: 'loss 0.512 accuracy 0.700 UAR 0.690 ...'."""
    return f"loss {metrics['loss']:.3f}  " + "  ".join(f"{METRIC_NAMES[k]} {metrics[k]:.3f}" for k in METRICS)


def _log_epoch(run: Run, step: int, train: dict, val: dict, lrs: list) -> None:
    writer = run.writer
    for split, metrics in (("train", train), ("val", val)):
        for key in ("loss", *METRICS):
            writer.add_scalar(f"{key}/{split}", metrics[key], step)
    if run.optim is not None:
        writer.add_scalar("lr/head", lrs[0], step)
        writer.add_scalar("lr/backbone", lrs[1], step)
    writer.add_figure("confusion/val", confusion_figure(val["confusion"], run.splits.classes,
                                                        title=f"validation, epoch {step}"), step)
    writer.flush()


def score_tests(run: Run) -> dict:
    """The test corpora's scores by best.pt, with speaker-level intervals, as `spectro evaluate` scores
    them (the same precision); the run's summary."""
    best = load_checkpoint(run.folder.best, map_location=run.device)
    run.net.load_state_dict(best["model"])
    splits, state = run.splits, run.state
    best_epoch = next(h for h in state.history if h["epoch"] == best["best"]["epoch"])
    summary = {"run": run.config.run.name, "model": run.config.model.name, "classes": list(splits.classes),
               "feature": splits.feature_label, "train": splits.train_trees, "train_corpora": splits.train_corpora,
               "best_epoch": best["best"]["epoch"], "epochs_run": len(state.history),
               "validation": best_epoch["val"], "test": {},
               **({"search": best_epoch["search"]} if "search" in best_epoch else {})}
    for name, rows in splits.tests.items():
        images = ImageSet([p for p, _ in rows], [u for _, u in rows], splits.classes, desc=f"test {name}",
                          progress=run.progress)
        probs = predict_proba(run.net, images, device=run.device, batch_size=2 * run.config.train.batch_size,
                              channels_last=run.channels_last, autocast=scoring_autocast(best, run.device))
        metrics, _ = score_recordings(probs.numpy(), images.utterances, splits.classes)
        summary["test"][name] = metrics
        run.writer.add_figure(f"confusion/test_{name}", confusion_figure(metrics["confusion"], splits.classes,
                                                                         title=f"test {name}"), best["best"]["epoch"])
        print(f"test {name}: {describe_scores(metrics)}", flush=True)
    _log_hparams(run, summary)
    return summary


def _log_hparams(run: Run, summary: dict) -> None:
    """The run's settings and final scores in TensorBoard's HParams table. Its table prints every number
    with five digits (16.000), so counts go in as text, as they should read."""
    cfg = run.config
    settings = {"model": cfg.model.name, "pretrained": cfg.model.pretrained, "classes": len(run.splits.classes),
                "feature": run.splits.feature_label,
                "channels": next(iter(run.splits.features.values())).image.channels,
                "training corpora": ", ".join(run.splits.train_corpora), "optimizer": cfg.optim.optimizer,
                "lr": cfg.optim.lr, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs,
                "class_balance": cfg.train.class_balance, "seed": cfg.train.seed}
    settings = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in settings.items()}
    val = summary["validation"]
    finals = {**{f"hparam/val_{k}": val[k] for k in METRICS},
              **{f"hparam/test_{n}_{k}": m[k] for n, m in summary["test"].items() for k in METRICS}}
    run.writer.add_hparams(settings, finals, run_name=".")


def _versions() -> dict:
    import timm

    return {"spectro": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": str(np.__version__), "python": sys.version.split()[0], "platform": platform.platform()}
