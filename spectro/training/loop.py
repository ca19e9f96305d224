"""One training epoch and one validation, for a run (`spectro.training.trainer.Run`).

The epoch reads top to bottom: this epoch's randomness from (seed, epoch); batches of windows
drawn by the sampler and read ahead by loader processes; each batch made float and augmented on
the device, then a step. Nothing is read back from the device between log points, and a stop
request (Ctrl-C, SIGTERM) or a due recovery point saves the state after a whole optimiser step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import SINGLE_INPUT, EpochSampler, as_model_input, window_loader
from ..metrics import classification_metrics
from ..scoring import forward, utterance_means, window_probabilities
from .batch_augment import mixup, spec_augment, vtlp
from .state import capture_rng, restore_rng, seed_epoch, seed_for


class EpochTally:
    """The running loss and predictions of an epoch, kept on the device until they are read."""

    def __init__(self, partial: dict | None, device: torch.device):
        partial = partial or {"loss_sum": 0.0, "count": 0, "y_true": [], "y_pred": []}
        self.loss_sum = torch.tensor(float(partial["loss_sum"]), device=device)
        self.count = int(partial["count"])
        self.y_true = [torch.tensor(partial["y_true"], dtype=torch.long)]
        self.y_pred = [torch.tensor(partial["y_pred"], dtype=torch.long)]

    def add(self, loss: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.loss_sum += loss.detach().float() * len(y)
        self.count += len(y)
        self.y_true.append(y.detach())
        self.y_pred.append(logits.detach().argmax(1))

    def as_partial(self) -> dict:
        return {"loss_sum": float(self.loss_sum), "count": self.count,
                "y_true": torch.cat([t.cpu() for t in self.y_true]).tolist(),
                "y_pred": torch.cat([t.cpu() for t in self.y_pred]).tolist()}


def train_one_epoch(run, epoch: int, start_batch: int = 0, partial: dict | None = None,
                    saved_rng: list | None = None) -> dict:
    """Train on every batch of `epoch` from `start_batch`; returns the epoch's training metrics."""
    cfg = run.config.train
    frozen = epoch < cfg.freeze_epochs and not cfg.lp_ft
    for p in run.optim.backbone_params:
        p.requires_grad_(not frozen)
    seed_epoch(cfg.seed, epoch, run.augment_rng)
    if saved_rng is not None:  # a resumed epoch: exactly the states it was saved with, this process's own
        restore_rng(saved_rng[run.dist.rank], run.augment_rng, cuda=run.cuda)
    tally = EpochTally(partial, run.device)
    run.model.train()
    sampler = EpochSampler(run.splits.train.n_windows, cfg.batch_size, seed=seed_for(cfg.seed, epoch, 0),
                           weights=run.weights, start_batch=start_batch, rank=run.dist.rank, world=run.dist.world)
    last = start_batch + len(sampler)
    loader = window_loader(run.splits.train, sampler, workers=cfg.workers, pin_memory=run.cuda)
    with tqdm(total=last, initial=start_batch, unit="batch", leave=False, disable=not run.progress,
              desc=f"epoch {epoch + 1}/{cfg.epochs}" + (" (head)" if frozen else "")) as bar:
        for b, (windows, stored, lengths, y) in enumerate(loader, start=start_batch):
            boundary = (b + 1) % cfg.accumulate == 0 or b + 1 == last  # an optimiser step ends this batch
            loss, logits, y = train_step(run, windows, stored, lengths, y, step=boundary,
                                         examples=epoch == 0 and b == 0)
            tally.add(loss, y, logits)
            bar.update()
            if (b + 1) % cfg.log_every == 0:
                bar.set_postfix(loss=f"{float(tally.loss_sum) / tally.count:.3f}")
            if boundary and b + 1 < last:
                run.save_if_asked(epoch, b + 1, tally, every_step=not run.dist.active or (b + 1) % cfg.log_every == 0)
    return epoch_metrics(run, tally)


def train_step(run, windows: torch.Tensor, stored: dict, lengths: dict, y: torch.Tensor, *, step: bool,
               examples: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward on one batch (made float and augmented on the device), and, at the end of a
    batch group of `train.accumulate`, the optimiser step. Returns the loss, logits and labels."""
    cfg, aug, optim = run.config.train, run.config.augment, run.optim
    memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
    inputs = {}
    for name, x in stored.items():
        x = as_model_input(x.to(run.device, non_blocking=True))
        if aug.vtlp_p and x.ndim == 4:
            x = vtlp(x, p=aug.vtlp_p, alpha=aug.vtlp_alpha, generator=run.augment_rng)
        x = spec_augment(x, time_masks=aug.time_masks, time_mask_width=aug.time_mask_width, freq_masks=aug.freq_masks,
                         freq_mask_width=aug.freq_mask_width, generator=run.augment_rng,
                         lengths=lengths[name] if x.ndim == 3 else None)
        if examples and x.ndim == 4 and run.writer is not None:
            run.writer.add_images(f"examples/train_augmented_{name}", x[:8].float().cpu(), 0)
        inputs[name] = x.contiguous(memory_format=memory_format) if x.ndim == 4 else x
    y = y.to(run.device, non_blocking=True)
    partners, weight = None, 1.0
    if cfg.mixup:
        inputs, lengths, partners, weight = mixup(inputs, lengths, alpha=cfg.mixup, generator=run.augment_rng)
    first = run.micro_batch % cfg.accumulate == 0
    if first:
        optim.optimizer.zero_grad(set_to_none=True)
    sync = contextlib.nullcontext() if step or not run.dist.active else run.model.no_sync()
    with sync, torch.autocast(run.device.type, dtype=run.autocast or torch.float32, enabled=run.autocast is not None):
        if run.domain is not None:
            progress = optim.scheduler.last_epoch / max(1, optim.total_steps)
            logits, domain_loss = run.domain.loss(run.model, inputs[SINGLE_INPUT], windows, progress=progress,
                                                  generator=run.augment_rng)
        else:
            logits, domain_loss = forward(run.model, inputs, lengths), 0.0
        loss = optim.loss_fn(logits.float(), y)
        if partners is not None:
            loss = weight * loss + (1 - weight) * optim.loss_fn(logits.float(), y[partners.to(y.device)])
        optim.scaler.scale((loss + domain_loss) / cfg.accumulate).backward()
    run.micro_batch += 1
    if step:
        optim.scaler.step(optim.optimizer)
        optim.scaler.update()
        if optim.ema is not None:
            optim.ema.update_parameters(run.net)
        optim.step_scheduler()
        run.micro_batch = 0
    return loss, logits, y


def epoch_metrics(run, tally: EpochTally) -> dict:
    """Accuracy, UAR, macro-F1 and mean loss over the whole epoch (every process's share)."""
    shares = run.dist.gather(tally.as_partial())
    y_true = [v for share in shares for v in share["y_true"]]
    y_pred = [v for share in shares for v in share["y_pred"]]
    loss = sum(s["loss_sum"] for s in shares) / max(1, sum(s["count"] for s in shares))
    return {**classification_metrics(y_true, y_pred, labels=range(len(run.splits.classes))), "loss": loss}


def validate(run) -> tuple[dict, torch.Tensor]:
    """Validation metrics of the scored model (the weights' average, if kept), and the probabilities;
    under DistributedDataParallel each process scores a share and all see every share."""
    images, cfg = run.splits.val, run.config.train
    share = torch.arange(run.dist.rank, images.n_windows, run.dist.world)
    probs = window_probabilities(run.scored_model, images, device=run.device, batch_size=2 * cfg.batch_size,
                                 channels_last=run.channels_last, autocast=run.autocast, windows=share)
    gathered = run.dist.gather((share, probs))
    windows = torch.empty(images.n_windows, probs.shape[1])
    for index, values in gathered:
        windows[index] = values
    utterances = utterance_means(windows, images.owner, len(images))
    loss = nn.functional.nll_loss(utterances.clamp_min(1e-12).log(), images.labels).item()
    metrics = classification_metrics(images.labels.tolist(), utterances.argmax(1).tolist(),
                                     labels=range(len(run.splits.classes)))
    return {**metrics, "loss": loss, "n": len(images)}, utterances


def rng_states(run) -> list:
    """Every process's random states, in rank order (each resumes with its own)."""
    return run.dist.gather(capture_rng(run.augment_rng, cuda=run.cuda))
