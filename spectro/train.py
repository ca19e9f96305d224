"""Fine-tuning on spectrogram images: the recipe, safe to interrupt, monitored in TensorBoard.

The loop reads top to bottom. Each epoch's data order, augmentation and dropout draw from
generators seeded by (seed, epoch), and their states travel in every checkpoint, so a resumed
run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .adversarial import DomainHead, pooled_and_logits, reversal_strength
from .augment import mixup, spec_augment
from .checkpoint import load_checkpoint, save_checkpoint, slim_state
from .config import ExperimentConfig, to_dict
from .corpora import class_names
from .data import SINGLE_INPUT, ImageSet, as_sources, batches, class_weights, read_sources, speaker_split, tree_digests
from .errors import ConfigError, DataError
from .fileio import atomic_open, describe_path
from .metrics import classification_metrics, confusion_figure, detailed_metrics
from .images import read_augmentation, read_feature_settings, read_image_manifest
from .inference import check_lengths, forward, predict_proba, resolve_device
from .leakage import TrainingRecord
from .locks import job_lock
from .models import create_model, is_estimator

log = logging.getLogger(__name__)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, cosine: bool) -> float:
    """Linear warm-up, then cosine decay to zero (or a constant 1 for the plateau schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _seed_for(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 101 + stream) % (2**63)


class Trainer:
    """Fine-tunes ``config.model`` on ``config.data``; writes checkpoints/<run>/ and runs/<run>/."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = True):
        self.config = config
        self.progress = progress
        self.run_dir = Path(config.run.checkpoint_dir) / config.run.name
        self.log_dir = Path(config.run.log_dir) / config.run.name
        self.classes = class_names(config.data.classes)
        self.device = resolve_device(config.train.device)
        self.cuda = self.device.type == "cuda"

    # ------------------------------------------------------------------ set-up
    def _prepare_data(self) -> None:
        data = self.config.data
        entries = [as_sources(e) for e in data.train]
        present = [e for e in entries
                   if data.missing_train == "error" or all((Path(t) / "manifest.csv").is_file() for t in e.values())]
        skipped = [e for e in entries if e not in present]
        if skipped:
            log.warning("data.missing_train=skip: no image tree at %s; training without them", skipped)
        if not present:
            trees = ", ".join(describe_path(t) for e in entries for t in e.values())
            raise ConfigError(f"none of the data.train image trees exist: {trees}; make them with `spectro images`")
        self.train_trees = [next(iter(e.values())) if len(e) == 1 else e for e in present]
        augmented = [as_sources(e) for e in data.train_augmented]
        _check_augmentation(present, "data.train", expected=False)
        _check_augmentation(augmented, "data.train_augmented", expected=True)
        _check_augmentation([as_sources(t) for t in data.test.values()], "data.test", expected=False)
        rows, self.features = read_sources(present, data.classes, self.config.labels.map)
        if len({json.dumps(to_dict(f.audio), sort_keys=True) for f in self.features.values()}) > 1:
            raise ConfigError("the inputs were rendered with different audio settings; one recording must be "
                              "conditioned one way for all inputs")
        utterances = [u for _, u in rows]
        train_idx, val_idx = self._split(utterances)
        self.train_corpora = sorted({utterances[i].corpus for i in train_idx})
        self.test_rows = {}
        for name, tree in data.test.items():
            self.test_rows[name], test_features = read_sources([as_sources(tree)], data.classes, self.config.labels.map)
            if test_features != self.features:
                raise ConfigError(f"data.test.{name}: {tree!r} was made with other feature settings (or inputs) than "
                                  "the training images; render it with the training settings")
        train_utts, val_utts = [utterances[i] for i in train_idx], [utterances[i] for i in val_idx]
        digests = tree_digests(present)
        self.record = TrainingRecord.of(train_utts, val_utts, (digests.get(u.path) for u in train_utts))
        self.record.check("the validation data", val_utts, digests, against_validation=False)
        for name, tree in data.test.items():
            self.record.check(f"test {name}", [u for _, u in self.test_rows[name]], tree_digests([as_sources(tree)]))
        copies = self._augmented_copies(augmented, {utterances[i].path for i in train_idx})
        pick = lambda idx: ([rows[i][0] for i in idx], [rows[i][1] for i in idx])  # noqa: E731
        train_paths, train_utts = pick(train_idx)
        self.train_set = ImageSet(train_paths + [p for p, _ in copies], train_utts + [u for _, u in copies],
                                  self.classes, desc="train images", progress=self.progress)
        self.val_set = ImageSet(*pick(val_idx), self.classes, desc="validation images", progress=self.progress)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ConfigError(f"the split left {len(self.train_set)} training and {len(self.val_set)} validation "
                              "utterances; both need some")
        log.info("train: %d utterances from %d speakers; validation: %d from %d speakers (%s)",
                 len(self.train_set), len({u.speaker for u in self.train_set.utterances}), len(self.val_set),
                 len({u.speaker for u in self.val_set.utterances}),
                 ", ".join(sorted({u.speaker for u in self.val_set.utterances})))

    def _split(self, utterances: list) -> tuple[list[int], list[int]]:
        """Training and validation indices: held-out speakers, or a whole held-out corpus (data.val_corpus)."""
        data = self.config.data
        if data.val_corpus is None:
            return speaker_split(utterances, val_speakers=data.val_speakers, val_fraction=data.val_fraction,
                                 seed=self.config.train.seed)
        corpora = sorted({u.corpus for u in utterances})
        if data.val_corpus not in corpora or len(corpora) < 2:
            raise ConfigError(f"data.val_corpus={data.val_corpus!r} must be one of several training corpora {corpora}")
        held_out = {i for i, u in enumerate(utterances) if u.corpus == data.val_corpus}
        return [i for i in range(len(utterances)) if i not in held_out], sorted(held_out)

    def _augmented_copies(self, entries: list[dict[str, str]], train_recordings: set[str]) -> list:
        """Augmented copies of the training split's recordings; copies of any other recording are left out."""
        if not entries:
            return []
        rows, features = read_sources(entries, self.config.data.classes, self.config.labels.map)
        if features != self.features:
            raise ConfigError("data.train_augmented trees were made with other feature settings (or inputs) than "
                              "data.train; render them with the same settings and --augment")
        kept = [row for row in rows if row[1].path in train_recordings]
        if rows and not kept:
            raise ConfigError(f"none of the {len(rows)} augmented copies in data.train_augmented is a copy of a training "
                              "recording; render them from the same corpus paths as data.train")
        log.info("%d augmented copies of training recordings added; %d copies of recordings outside the training "
                 "split (validation speakers, other corpora) left out", len(kept), len(rows) - len(kept))
        return kept

    def _prepare_model(self) -> None:
        cfg, optim = self.config, self.config.optim
        shape = self.train_set.window_shape(SINGLE_INPUT) if SINGLE_INPUT in self.train_set.windows else ()
        self.in_channels = shape[0] if len(shape) == 1 else None  # features per frame of a matrix input
        self.model = create_model(cfg.model.name, len(self.classes), pretrained=cfg.model.pretrained,
                                  weights=cfg.model.weights, drop_rate=cfg.model.drop_rate,
                                  in_channels=self.in_channels).to(self.device)
        wanted = list(getattr(self.model, "input_names", [SINGLE_INPUT]))
        if sorted(wanted) != sorted(self.features):
            raise ConfigError(f"model {cfg.model.name!r} reads inputs {wanted}, but the data entries give "
                              f"{sorted(self.features)}; write each data.train entry as {{{', '.join(f'{n}: TREE' for n in wanted)}}}"
                              if len(wanted) > 1 else
                              f"model {cfg.model.name!r} reads one input; give each data.train entry as one image tree")
        check_lengths(self.model, self.train_set)
        if (cfg.model.params or cfg.model.search) and not is_estimator(self.model):
            raise ConfigError(f"model.params and model.search apply to scikit-learn baselines, not {cfg.model.name!r}")
        self.sample_weights = self._sample_weights(cfg.train.class_balance)
        self.ema = self.domain_head = self.target_set = None
        self.transductive = []
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.optimizer = self.scheduler = self.plateau = self.search_results = None
        self.channels_last, self.backbone_params = False, []
        if is_estimator(self.model):
            return  # fitted in one go by _fit_estimator: no optimiser, schedule or loss
        self.channels_last = self.cuda and cfg.train.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        head = {id(p) for p in self.model.new_parameters()}  # start untrained: full lr, never frozen
        self.backbone_params = [p for p in self.model.parameters() if id(p) not in head]
        groups = [{"params": [p for p in self.model.parameters() if id(p) in head], "lr": optim.lr},
                  {"params": self.backbone_params, "lr": optim.lr * optim.backbone_lr_scale}]
        self._prepare_adversarial()
        if self.domain_head is not None:  # untrained too: the classifier's learning rate
            groups[0]["params"] += list(self.domain_head.parameters())
        if cfg.train.ema:  # validation, best.pt and the test scores use the averaged weights
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)
        if optim.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=True)
        self.steps_per_epoch = math.ceil(self.train_set.n_windows / cfg.train.batch_size)
        self.warmup_steps = int(round(optim.warmup_epochs * self.steps_per_epoch))
        total = cfg.train.epochs * self.steps_per_epoch
        factor = lambda step: lr_factor(step, warmup_steps=self.warmup_steps, total_steps=total,  # noqa: E731
                                        cosine=optim.schedule == "cosine")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=optim.plateau_factor, patience=optim.plateau_patience)
            if optim.schedule == "plateau" else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and cfg.train.amp)
        counts = self.train_set.class_counts()
        weight = class_weights(counts).to(self.device) if cfg.train.class_balance == "loss" else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.train.label_smoothing)

    def _prepare_adversarial(self) -> None:
        """The domain branch of domain-adversarial training: each training window's domain (its corpus or
        speaker), and the unlabelled windows of any target corpora, which form one more domain."""
        adv = self.config.adversarial
        if not adv.weight:
            return
        if self.config.train.mixup:
            raise ConfigError("train.mixup and adversarial training cannot be combined (mixed windows have no one domain)")
        utterances = [self.train_set.utterances[i] for i in self.train_set.owner.tolist()]
        keys = [u.corpus if adv.domain == "corpus" else u.speaker for u in utterances]
        names = sorted(set(keys))
        self.domain_labels = torch.tensor([names.index(k) for k in keys])
        if adv.target:
            rows = [row for tree in adv.target for row in read_image_manifest(tree)]  # their labels are never used
            if any(read_feature_settings(tree) != self._first_features for tree in adv.target):
                raise ConfigError("adversarial.target trees were made with other feature settings than the training "
                                  "images; render them with the same settings")
            self.target_set = ImageSet([p for p, _ in rows], [u for _, u in rows], None, desc="target images",
                                       progress=self.progress)
            corpora = sorted({u.corpus for _, u in rows})
            self.transductive = [f"domain-adversarial training with the unlabelled audio of {', '.join(corpora)}"]
        self.domain_head = DomainHead(self.model.num_features, len(names) + bool(adv.target),
                                      hidden=adv.hidden).to(self.device)
        log.info("domain-adversarial training: %d %s domains%s, weight %g", len(names), adv.domain,
                 " plus the unlabelled target" if adv.target else "", adv.weight)

    @property
    def _scored_model(self) -> nn.Module:
        """What validation, best.pt and the test scores use: the weights' moving average, if kept."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def _first_features(self):
        return next(iter(self.features.values()))

    @property
    def _feature_label(self) -> str:
        """"mel" for one input; "mel,gd" (the inputs' features, in order) for several."""
        return ",".join(f.feature for f in self.features.values())

    def _sample_weights(self, balance: str) -> torch.Tensor:
        """Per-window draw weights for the balanced samplers (a window is one training example)."""
        labels = self.train_set.window_labels
        if balance != "corpus":
            return class_weights(self.train_set.class_counts())[labels]
        corpora = [self.train_set.utterances[i].corpus for i in self.train_set.owner.tolist()]
        cells = list(zip(corpora, labels.tolist()))
        sizes = Counter(cells)
        return torch.tensor([1.0 / sizes[cell] for cell in cells])

    # ------------------------------------------------------------------ state
    def _state(self, *, epoch: int, batch: int, partial: dict | None) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer and self.optimizer.state_dict(),
            "scheduler": self.scheduler and self.scheduler.state_dict(), "in_channels": self.in_channels,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "scaler": self.scaler.state_dict(), "epoch": epoch, "batch": batch, "partial": partial,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "augment": self.augment_rng.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.cuda else []},
            "best": dict(self.best), "bad_epochs": self.bad_epochs, "history": list(self.history),
            "finished": self.finished, "classes": list(self.classes), "model_name": self.config.model.name,
            "train_corpora": self.train_corpora, "training_record": self.record.as_dict(),
            "transductive": self.transductive,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "domain_head": self.domain_head.state_dict() if self.domain_head is not None else None,
            "config": to_dict(self.config), "inputs": {n: to_dict(f) for n, f in self.features.items()},
            "versions": _versions(),
        }

    def _inference_state(self, *, epoch: int) -> dict:
        """best.pt: what predicting needs, with the weights that were scored (the moving average, if kept)."""
        state = slim_state(self._state(epoch=epoch, batch=0, partial=None))
        state["model"] = self._scored_model.state_dict()
        return state

    def _restore(self, state: dict) -> None:
        if state["config"] != to_dict(self.config):
            raise ConfigError(f"{self.run_dir / 'last.pt'} was written with another config; resume with the "
                              "same settings, or start a new run with --set run.name=...")
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.domain_head is not None:
            self.domain_head.load_state_dict(state["domain_head"])
        if self.optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau:
            self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])
        self.best, self.bad_epochs = dict(state["best"]), state["bad_epochs"]
        self.history, self.finished = list(state["history"]), state["finished"]

    # ------------------------------------------------------------------ the recipe
    def fit(self, *, resume: bool = False) -> dict:
        """Train, keep the checkpoint with the best validation UAR, then score the test sets with it.

        The run folder is locked for the whole run. Ctrl-C or SIGTERM finishes the batch in hand, saves
        ``last.pt`` and raises `TrainingStopped`; ``fit(resume=True)`` then ends exactly as an
        uninterrupted run would.
        """
        last_path = self.run_dir / "last.pt"
        with job_lock(self.run_dir, "spectro train"), GracefulStop() as self.stop:
            if last_path.exists() and not resume:
                raise ConfigError(f"run {self.config.run.name!r} already has {last_path}; pass --resume to continue "
                                  "it, or name a new run with --set run.name=...")
            if resume and (self.run_dir / "summary.json").is_file():
                log.info("run %s is finished; nothing to redo", self.config.run.name)
                return json.loads((self.run_dir / "summary.json").read_text())
            return self._run(resume=resume)

    def _run(self, *, resume: bool) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.config.train
        last_path, best_path = self.run_dir / "last.pt", self.run_dir / "best.pt"
        # 1. Data, model, optimiser; the resolved config is written beside the checkpoints.
        self._prepare_data()
        torch.manual_seed(_seed_for(cfg.seed, -1, 0))  # the new classifier's initial weights
        self._prepare_model()
        self.best, self.bad_epochs, self.history, self.finished = {"uar": -1.0, "epoch": 0}, 0, [], False
        self.augment_rng = torch.Generator()
        start_epoch, start_batch, partial, saved_rng = 0, 0, None, None
        if resume and last_path.exists():
            state = load_checkpoint(last_path)
            self._restore(state)
            start_epoch, start_batch, partial, saved_rng = state["epoch"], state["batch"], state["partial"], state["rng"]
            log.info("resuming %s at epoch %d, batch %d", self.config.run.name, start_epoch + 1, start_batch)
        with atomic_open(self.run_dir / "config.yaml") as handle:
            yaml.safe_dump({**to_dict(self.config), "inputs": {n: to_dict(f) for n, f in self.features.items()},
                            "classes": list(self.classes)}, handle, sort_keys=False)
        writer = SummaryWriter(str(self.log_dir), purge_step=start_epoch + 1 if start_epoch else None)

        # 2. Epochs: head only first, then the whole network. A scikit-learn baseline is fitted once instead.
        try:
            if is_estimator(self.model) and not self.finished:
                self._end_epoch(0, self._fit_estimator(), writer, best_path)
                self.finished = True
            for epoch in range(start_epoch, cfg.epochs if not is_estimator(self.model) else 0):
                if self.finished:
                    break
                resume_here = saved_rng if epoch == start_epoch and start_batch else None
                train_metrics = self._train_epoch(epoch, start_batch if resume_here else 0, partial, resume_here, writer)
                start_batch, partial = 0, None
                self._end_epoch(epoch, train_metrics, writer, best_path)
                save_checkpoint(self._state(epoch=epoch + 1, batch=0, partial=None), last_path)
                self._stop_if_asked(epoch + 1, 0)
        finally:
            writer.close()

        # 3. Only now, the test corpora, scored by the checkpoint chosen on validation data.
        self.finished = True
        save_checkpoint(self._state(epoch=len(self.history), batch=0, partial=None), last_path)
        with SummaryWriter(str(self.log_dir)) as writer:
            summary = self._evaluate_tests(best_path, writer)
        with atomic_open(self.run_dir / "summary.json") as handle:
            json.dump(summary, handle, indent=2)
        return summary

    def _stop_if_asked(self, epoch: int, batch: int, partial: dict | None = None) -> None:
        """After a whole batch or epoch: if Ctrl-C or SIGTERM came, save the state from here and stop."""
        if self.stop.signal is None:
            return
        if partial is not None:  # mid-epoch: the epoch-end checkpoint is not there yet
            save_checkpoint(self._state(epoch=epoch, batch=batch, partial=partial), self.run_dir / "last.pt")
        raise TrainingStopped(f"{self.stop.signal}: saved {self.run_dir / 'last.pt'} after epoch {epoch}"
                              + (f", batch {batch}" if partial is not None else "")
                              + "; continue with the same command and --resume")

    def _train_epoch(self, epoch: int, start_batch: int, partial: dict | None, saved_rng: dict | None, writer) -> dict:
        cfg = self.config.train
        frozen = epoch < cfg.freeze_epochs
        for p in self.backbone_params:
            p.requires_grad_(not frozen)
        # This epoch's randomness, from (seed, epoch); a mid-epoch resume restores the exact states.
        self.augment_rng.manual_seed(_seed_for(cfg.seed, epoch, 1))
        torch.manual_seed(_seed_for(cfg.seed, epoch, 2))
        random.seed(_seed_for(cfg.seed, epoch, 3))
        if saved_rng is not None:
            torch.set_rng_state(saved_rng["torch"])
            random.setstate(saved_rng["python"])
            self.augment_rng.set_state(saved_rng["augment"])
            if self.cuda and saved_rng["cuda"]:
                torch.cuda.set_rng_state_all(saved_rng["cuda"])
        acc = partial or {"loss_sum": 0.0, "count": 0, "y_true": [], "y_pred": []}
        self.model.train()
        steps = batches(self._draw_order(epoch), cfg.batch_size)
        bar = tqdm(total=len(steps), initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}" + (" (head)" if frozen else ""),
                   unit="batch", leave=False, disable=not self.progress)
        for b in range(start_batch, len(steps)):
            y, logits, loss = self._train_step(steps[b], writer if epoch == 0 and b == 0 else None)
            acc["loss_sum"] += loss.item() * len(y)
            acc["count"] += len(y)
            acc["y_true"] += y.tolist()
            acc["y_pred"] += logits.argmax(1).tolist()
            bar.set_postfix(loss=f"{acc['loss_sum'] / acc['count']:.3f}")
            bar.update()
            self._stop_if_asked(epoch, b + 1, acc)
        bar.close()
        metrics = classification_metrics(acc["y_true"], acc["y_pred"], labels=range(len(self.classes)))
        return {**metrics, "loss": acc["loss_sum"] / acc["count"]}

    def _train_step(self, windows: torch.Tensor, example_writer=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch of windows (SpecAugment first); its labels, logits and loss."""
        aug = self.config.augment
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        inputs, lengths, y = self.train_set.batch(windows)
        for name, x in inputs.items():
            x = spec_augment(x, time_masks=aug.time_masks, time_mask_width=aug.time_mask_width,
                             freq_masks=aug.freq_masks, freq_mask_width=aug.freq_mask_width,
                             generator=self.augment_rng, lengths=lengths[name] if x.ndim == 3 else None)
            if example_writer is not None and x.ndim == 4:
                example_writer.add_images(f"examples/train_augmented_{name}", x[:8], 0)
            inputs[name] = x.to(self.device, memory_format=memory_format if x.ndim == 4 else torch.contiguous_format,
                                non_blocking=True)
        y = y.to(self.device)
        partners, weight = None, 1.0
        if self.config.train.mixup:
            inputs, lengths, partners, weight = mixup(inputs, lengths, alpha=self.config.train.mixup,
                                                      generator=self.augment_rng)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
            if self.domain_head is not None:
                logits, domain_loss = self._adversarial_forward(inputs[SINGLE_INPUT], windows)
            else:
                logits, domain_loss = forward(self.model, inputs, lengths), 0.0
            loss = self.loss_fn(logits.float(), y)
            if partners is not None:
                loss = weight * loss + (1 - weight) * self.loss_fn(logits.float(), y[partners.to(y.device)])
            loss = loss + domain_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.plateau is None or self.scheduler.last_epoch < self.warmup_steps:
            self.scheduler.step()
        return y, logits, loss

    def _adversarial_forward(self, x: torch.Tensor, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion logits of the batch, and the weighted domain loss over it and as many target windows."""
        pooled, logits = pooled_and_logits(self.model, x)
        domains = self.domain_labels[windows].to(self.device)
        if self.target_set is not None:
            picks = torch.randint(0, self.target_set.n_windows, (len(x),), generator=self.augment_rng)
            target, _, _ = self.target_set.batch(picks)
            target_pooled, _ = pooled_and_logits(self.model, target[SINGLE_INPUT].to(self.device))
            pooled = torch.cat([pooled, target_pooled])
            domains = torch.cat([domains, torch.full((len(picks),), self.domain_head.layers[-1].out_features - 1,
                                                     device=self.device)])
        progress = self.scheduler.last_epoch / max(1, self.config.train.epochs * self.steps_per_epoch)
        domain_logits = self.domain_head(pooled.float(), reversal_strength(progress))
        return logits, self.config.adversarial.weight * nn.functional.cross_entropy(domain_logits, domains)

    def _draw_order(self, epoch: int) -> torch.Tensor:
        """This epoch's training windows in order: weighted draws with replacement for the balanced
        samplers, otherwise each window once; fixed by (seed, epoch), so a resumed epoch replays."""
        cfg, n = self.config.train, self.train_set.n_windows
        generator = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, 0))
        if cfg.class_balance in ("sampler", "corpus"):
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=generator)
        return torch.randperm(n, generator=generator)

    def _fit_estimator(self) -> dict:
        """Fit a scikit-learn baseline on the training split, after an optional grid search whose every
        candidate is fitted on the training split and scored by UAR on the validation speakers."""
        from sklearn.model_selection import GridSearchCV, PredefinedSplit
        from sklearn.utils.validation import has_fit_parameter

        cfg, model = self.config, self.model
        X, y = _vectors(self.train_set), self.train_set.window_labels.numpy()
        weights = None if cfg.train.class_balance == "none" else self.sample_weights.double().numpy()
        if weights is not None and not has_fit_parameter(model.pipeline.named_steps["clf"], "sample_weight"):
            log.warning("%s takes no sample weights: train.class_balance=%s is not applied",
                        cfg.model.name, cfg.train.class_balance)
            weights = None
        seeds = {k: cfg.train.seed for k in model.pipeline.get_params() if k.endswith("random_state")}
        try:
            model.pipeline.set_params(**seeds, **cfg.model.params)
        except ValueError as error:
            raise ConfigError(f"model.params: {error}") from None
        self._group_internal_folds()
        if cfg.model.search:
            X_val = _vectors(self.val_set)
            fold = np.r_[np.full(len(X), -1), np.zeros(len(X_val))]  # train on the split, score on validation
            fit_params = {} if weights is None else {"clf__sample_weight": np.r_[weights, np.ones(len(X_val))]}
            search = GridSearchCV(model.pipeline, model.search_space, scoring="balanced_accuracy",
                                  cv=PredefinedSplit(fold), refit=False, n_jobs=-1)
            search.fit(np.vstack([X, X_val]), np.r_[y, self.val_set.window_labels.numpy()], **fit_params)
            model.pipeline.set_params(**search.best_params_)
            self.search_results = [{"params": p, "val_uar": float(s)} for p, s in
                                   zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])]
            log.info("grid search: best %s (validation UAR %.3f)", search.best_params_, search.best_score_)
        try:
            model.fit(X, y, sample_weight=weights)
        except ValueError as error:  # e.g. too few utterances per class for the model's internal folds
            raise DataError(f"{cfg.model.name} cannot be fitted on this training split: {error}") from None
        probs = predict_proba(model, self.train_set, device=self.device)
        labels = self.train_set.labels
        loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
        return {**classification_metrics(labels.tolist(), probs.argmax(1).tolist(), labels=range(len(self.classes))),
                "loss": loss}

    def _group_internal_folds(self) -> None:
        """With augmented copies, keep each recording's copies on one side of a model's internal splits:
        calibration folds are grouped by recording, and the MLP's random early-stopping hold-out is off."""
        recordings = [self.train_set.utterances[i].path for i in self.train_set.owner.tolist()]
        if len(set(recordings)) == len(recordings):
            return
        from sklearn.model_selection import GroupKFold

        params = self.model.pipeline.get_params()
        folds = list(GroupKFold(5).split(recordings, groups=recordings))
        grouped = {k: folds for k in params if k.endswith("__cv")}
        grouped |= {k: False for k in params if k.endswith("early_stopping")}
        if grouped:
            log.info("augmented copies present: %s", ", ".join(f"{k} grouped by recording" if k.endswith("cv")
                                                                else f"{k}=False" for k in grouped))
            self.model.pipeline.set_params(**grouped)

    def _end_epoch(self, epoch: int, train: dict, writer, best_path: Path) -> None:
        cfg = self.config.train
        val_probs = predict_proba(self._scored_model, self.val_set, device=self.device, batch_size=2 * cfg.batch_size,
                                  channels_last=self.channels_last)
        val_loss = nn.functional.nll_loss(val_probs.clamp_min(1e-12).log(), self.val_set.labels).item()
        val = {**classification_metrics(self.val_set.labels.tolist(), val_probs.argmax(1).tolist(),
                                        labels=range(len(self.classes))), "loss": val_loss, "n": len(self.val_set)}
        lrs = [group["lr"] for group in self.optimizer.param_groups] if self.optimizer else [None, None]
        if self.plateau is not None and self.scheduler.last_epoch >= self.warmup_steps:
            self.plateau.step(val["uar"])
        improved = val["uar"] > self.best["uar"]
        if improved:
            self.best, self.bad_epochs = {"uar": val["uar"], "epoch": epoch + 1}, 0
        else:
            self.bad_epochs += 1
        self.history.append({"epoch": epoch + 1, "lr_head": lrs[0], "lr_backbone": lrs[1],
                             "train": {k: v for k, v in train.items() if k != "confusion"}, "val": val,
                             **({"search": self.search_results} if self.search_results else {})})
        step = epoch + 1
        for split, metrics in (("train", train), ("val", val)):
            for key in ("loss", "accuracy", "uar", "macro_f1"):
                writer.add_scalar(f"{key}/{split}", metrics[key], step)
        if self.optimizer:
            writer.add_scalar("lr/head", lrs[0], step)
            writer.add_scalar("lr/backbone", lrs[1], step)
        writer.add_figure("confusion/val", confusion_figure(val["confusion"], self.classes, title=f"validation, epoch {step}"), step)
        writer.flush()
        stop = cfg.early_stopping_patience and self.bad_epochs >= cfg.early_stopping_patience
        self.finished = bool(stop) or step == cfg.epochs
        if improved:  # inference needs no optimiser or RNG state: best.pt is slim
            save_checkpoint(self._inference_state(epoch=step), best_path)
        when = "fitted" if is_estimator(self.model) else f"epoch {step:3d}/{cfg.epochs}"
        print(f"{when}  train loss {train['loss']:.3f} acc {train['accuracy']:.3f} "
              f"uar {train['uar']:.3f} | val loss {val_loss:.3f} acc {val['accuracy']:.3f} uar {val['uar']:.3f} "
              f"f1 {val['macro_f1']:.3f}{f'  lr {lrs[0]:.2e}' if self.optimizer else ''}{'  *best' if improved else ''}"
              f"{'  early stop' if stop else ''}", flush=True)

    def _evaluate_tests(self, best_path: Path, writer) -> dict:
        best = load_checkpoint(best_path, map_location=self.device)
        self.model.load_state_dict(best["model"])
        best_epoch = next(h for h in self.history if h["epoch"] == best["best"]["epoch"])
        summary = {"run": self.config.run.name, "model": self.config.model.name, "classes": list(self.classes),
                   "feature": self._feature_label, "train": self.train_trees, "train_corpora": self.train_corpora,
                   "best_epoch": best["best"]["epoch"], "epochs_run": len(self.history),
                   "validation": best_epoch["val"], "test": {}, **({"search": best_epoch["search"]} if "search" in best_epoch else {})}
        for name, rows in self.test_rows.items():
            test_set = ImageSet([p for p, _ in rows], [u for _, u in rows], self.classes, desc=f"test {name}",
                                progress=self.progress)
            probs = predict_proba(self.model, test_set, device=self.device, batch_size=2 * self.config.train.batch_size,
                                  channels_last=self.channels_last)
            metrics = detailed_metrics(test_set.labels.tolist(), probs.argmax(1).tolist(), class_names=self.classes,
                                       groups=[u.speaker for u in test_set.utterances])
            summary["test"][name] = metrics
            writer.add_figure(f"confusion/test_{name}", confusion_figure(metrics["confusion"], self.classes,
                                                                         title=f"test {name}"), best["best"]["epoch"])
            print(f"test {name}: n {len(test_set)}  acc {metrics['accuracy']:.3f}  uar {metrics['uar']:.3f}  "
                  f"f1 {metrics['macro_f1']:.3f}", flush=True)
        self._log_hparams(writer, summary)
        return summary

    def _log_hparams(self, writer, summary: dict) -> None:
        """The run's settings and final scores in TensorBoard's HParams table. Its table prints every number
        with five digits (16.000), so counts go in as text, as they should read."""
        cfg = self.config
        settings = {"model": cfg.model.name, "pretrained": cfg.model.pretrained, "classes": len(self.classes),
                    "feature": self._feature_label, "channels": self._first_features.image.channels,
                    "training corpora": ", ".join(self.train_corpora), "optimizer": cfg.optim.optimizer,
                    "lr": cfg.optim.lr, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs,
                    "class_balance": cfg.train.class_balance, "seed": cfg.train.seed}
        settings = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in settings.items()}
        val = summary["validation"]
        finals = {"hparam/val_accuracy": val["accuracy"], "hparam/val_uar": val["uar"],
                  "hparam/val_macro_f1": val["macro_f1"],
                  **{f"hparam/test_{n}_{k}": m[k] for n, m in summary["test"].items() for k in ("accuracy", "uar", "macro_f1")}}
        writer.add_hparams(settings, finals, run_name=".")


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a state from which --resume continues exactly."""


class GracefulStop:
    """Turns Ctrl-C and SIGTERM (cluster pre-emption) into a request that the loop honours between
    batches, so the state it saves is whole; a second Ctrl-C stops at once, saving nothing more."""

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(number).name
        log.warning("%s: finishing the batch in hand, then saving and stopping (Ctrl-C again stops at once)",
                    self.signal)


def _vectors(images: ImageSet) -> np.ndarray:
    """The (windows, features) matrix a scikit-learn baseline reads: utterance statistics."""
    shape = images.window_shape(SINGLE_INPUT)
    if len(shape) != 1 or int(images.lengths[SINGLE_INPUT].max()) != 1:
        raise ConfigError(f"scikit-learn baselines read one vector per utterance, not inputs of shape {shape}; train "
                          "them on trees made with --feature stats")
    stored, _, _ = images.stored(torch.arange(images.n_windows))
    return stored[SINGLE_INPUT][:, :, 0].double().numpy()


def _check_augmentation(entries: list[dict[str, str]], key: str, *, expected: bool) -> None:
    """Trees of augmented copies belong in data.train_augmented and nowhere else."""
    for entry in entries:
        for tree in entry.values():
            if (Path(tree) / "features.json").is_file() and (read_augmentation(tree) is not None) != expected:
                raise ConfigError(f"{key}: {tree!r} " + ("holds no augmented copies; make it with `spectro images --augment`"
                                                          if expected else "holds augmented copies, which may only train: "
                                                          "list it under data.train_augmented"))


def _versions() -> dict:
    import timm

    return {"spectro": __version__, "torch": str(torch.__version__), "timm": str(timm.__version__),
            "numpy": str(np.__version__), "python": sys.version.split()[0], "platform": platform.platform()}

