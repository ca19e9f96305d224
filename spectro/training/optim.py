"""How a network learns: parameter groups, optimiser, learning-rate schedule, gradient scaler, loss,
the balanced samplers' draw weights, and the optional moving average of the weights."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import torch
from torch import nn

from ..config import ExperimentConfig, TrainConfig
from ..data import ImageSet, class_weights
from ..scoring import autocast_dtype


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, cosine: bool) -> float:
    """Linear warm-up, then cosine decay to zero (or a constant 1 for the plateau schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def sample_weights(train: ImageSet, balance: str) -> torch.Tensor | None:
    """Per-window draw weights of the balanced samplers (None: every window once per epoch): classes
    drawn equally often ("sampler"), or every (corpus, class) pair ("corpus")."""
    if balance not in ("sampler", "corpus"):
        return None
    labels = train.window_labels
    if balance == "sampler":
        return class_weights(train.class_counts())[labels]
    corpora = [train.utterances[i].corpus for i in train.owner.tolist()]
    cells = list(zip(corpora, labels.tolist()))
    sizes = Counter(cells)
    return torch.tensor([1.0 / sizes[cell] for cell in cells])


@dataclasses.dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    backbone_params: list[nn.Parameter]
    steps_per_epoch: int  # optimiser steps
    warmup_steps: int
    total_steps: int
    ema: nn.Module | None  # torch.optim.swa_utils.AveragedModel

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau else None, "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau:
            self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def step_scheduler(self) -> None:
        """After each optimiser step: the warm-up and cosine factors (a plateau schedule steps per epoch)."""
        if self.plateau is None or self.scheduler.last_epoch < self.warmup_steps:
            self.scheduler.step()


def build_optimisation(model: nn.Module, config: ExperimentConfig, train: ImageSet, device: torch.device, *,
                       extra_params: list[nn.Parameter] = ()) -> Optimisation:
    """Two learning rates (the new classifier, and `extra_params`, learn at optim.lr; pretrained layers at
    optim.lr * backbone_lr_scale, and so does the classifier under LP-FT, which starts fitted), warm-up and
    decay per optimiser step, and the loss."""
    optim, cfg = config.optim, config.train
    head = set() if cfg.lp_ft else {id(p) for p in model.new_parameters()}  # untrained: full lr, never frozen
    backbone = [p for p in model.parameters() if id(p) not in head]
    groups = [{"params": [p for p in model.parameters() if id(p) in head] + list(extra_params), "lr": optim.lr},
              {"params": backbone, "lr": optim.lr * optim.backbone_lr_scale}]
    if optim.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(math.ceil(train.n_windows / cfg.batch_size) / cfg.accumulate)
    warmup = int(round(optim.warmup_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    factor = lambda step: lr_factor(step, warmup_steps=warmup, total_steps=total,  # noqa: E731
                                    cosine=optim.schedule == "cosine")
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=optim.plateau_factor,
                                                          patience=optim.plateau_patience)
               if optim.schedule == "plateau" else None)
    return Optimisation(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), plateau,
                        torch.amp.GradScaler("cuda", enabled=autocast_dtype(cfg.precision, device) == torch.float16
                                             and device.type == "cuda"),
                        _loss(cfg, train, device), backbone, steps_per_epoch, warmup, total, _ema(model, cfg))


def _loss(cfg: TrainConfig, train: ImageSet, device: torch.device) -> nn.Module:
    weight = class_weights(train.class_counts()).to(device) if cfg.class_balance == "loss" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def _ema(model: nn.Module, cfg: TrainConfig) -> nn.Module | None:
    """The moving average that validation, best.pt and the test scores use when train.ema is set."""
    if not cfg.ema:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
