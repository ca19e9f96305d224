"""SpecAugment-style masking on spectrogram images (Park et al. 2019), for training batches only.

No ImageNet augmentations: a horizontal flip reverses time, and colour jitter means nothing here.
"""

from __future__ import annotations

import torch


def _band_mask(batch: int, length: int, *, count: int, max_fraction: float, generator: torch.Generator,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, length) booleans: `count` bands per row, each up to ``max_fraction`` of the row's
    `valid` length (all of `length` by default) wide, inside that valid part."""
    positions = torch.arange(length)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    if valid is None:
        max_width = int(max_fraction * length)
        for _ in range(count):
            width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
            start = (torch.rand(batch, 1, generator=generator) * (length - width + 1)).long()
            mask |= (positions >= start) & (positions < start + width)
        return mask
    valid = valid.reshape(batch, 1).cpu()
    max_width = (max_fraction * valid).long()
    for _ in range(count):
        width = (torch.rand(batch, 1, generator=generator) * (max_width + 1)).long()
        start = (torch.rand(batch, 1, generator=generator) * (valid - width + 1)).long()
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(images: torch.Tensor, *, time_masks: int, time_mask_width: float, freq_masks: int,
                 freq_mask_width: float, generator: torch.Generator,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mask random time columns and frequency rows of (B, C, H, W) images with each image's mean.

    Parameters
    ----------
    time_masks, freq_masks : int >= 0
        Bands per image along width (time) and height (frequency).
    time_mask_width, freq_mask_width : float in [0, 1]
        Largest band width as a fraction of the image side.
    generator : torch.Generator
        The only source of randomness, so a run replays exactly on resume.
    lengths : torch.Tensor [shape=(B,)], optional
        Valid time steps of zero-padded sequences: bands scale with, and stay inside, each row's
        own length, and the fill is the mean of its valid part.
    """
    if images.ndim == 3:  # (B, F, T) matrices such as MFCCs: mask them like one-channel images
        return spec_augment(images[:, None], time_masks=time_masks, time_mask_width=time_mask_width,
                            freq_masks=freq_masks, freq_mask_width=freq_mask_width, generator=generator,
                            lengths=lengths)[:, 0]
    b, _, h, w = images.shape
    cols = _band_mask(b, w, count=time_masks, max_fraction=time_mask_width, generator=generator, valid=lengths)
    rows = _band_mask(b, h, count=freq_masks, max_fraction=freq_mask_width, generator=generator)
    masked = (rows[:, :, None] | cols[:, None, :])[:, None]  # (B, 1, H, W)
    if lengths is None:
        fill = images.mean(dim=(2, 3), keepdim=True)
    else:
        valid = (torch.arange(w)[None, :] < lengths.reshape(b, 1).cpu())[:, None, None, :].to(images.device)
        fill = (images * valid).sum(dim=(2, 3), keepdim=True) / (valid.sum(dim=(2, 3), keepdim=True) * h)
        masked &= valid
    return torch.where(masked, fill, images)


def mixup(inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor], *, alpha: float,
          generator: torch.Generator) -> tuple[dict, dict, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): each example blended with a partner from the same batch, with one weight
    drawn from Beta(alpha, alpha) for the batch (all inputs of an utterance blend alike).

    Returns the blended inputs, their lengths (the longer of each pair), the partners' positions and
    the weight of the originals; the loss is ``w * loss(y) + (1 - w) * loss(y[partners])``.
    """
    weight = float(torch.distributions.Beta(alpha, alpha).sample())  # the global generator: saved on resume
    size = len(next(iter(inputs.values())))
    partners = torch.randperm(size, generator=generator)
    blended = {name: weight * x + (1 - weight) * x[partners.to(x.device)] for name, x in inputs.items()}
    longer = {name: torch.maximum(n, n[partners]) for name, n in lengths.items()}
    return blended, longer, partners, weight


def vtlp(images: torch.Tensor, *, p: float, alpha: tuple[float, float], generator: torch.Generator,
         boundary: float = 0.8) -> torch.Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) of (B, C, H, W) pictures whose rows are
    frequency, highest at the top: with probability `p`, each picture's frequency axis is warped by a factor
    drawn from `alpha`, linearly up to `boundary` of the band and then so that the top stays the top.

    The warp acts on the picture (all channels alike, deltas included), so one model-side transform serves
    every feature; `generator` is the only randomness, so a run replays exactly on resume.
    """
    b, _, h, w = images.shape
    fires = torch.rand(b, generator=generator) < p
    factors = torch.where(fires, alpha[0] + (alpha[1] - alpha[0]) * torch.rand(b, generator=generator),
                          torch.ones(b))
    if not fires.any():
        return images
    f = torch.linspace(0, 1, h)[None, :]  # output frequency, 0 = the lowest band
    a = factors[:, None]
    knee = boundary * torch.minimum(a, torch.ones_like(a)) / a  # where the warp's second segment starts
    source = torch.where(f <= knee, f * a, boundary * torch.minimum(a, torch.ones_like(a))
                         + (f - knee) * (1 - boundary * torch.minimum(a, torch.ones_like(a))) / (1 - knee))
    rows = (1 - source).flip(1) * 2 - 1  # grid_sample's y: -1 at the top row; rows run top (high) to bottom (low)
    grid = torch.stack([torch.linspace(-1, 1, w)[None, None, :].expand(b, h, w),
                        rows[:, :, None].expand(b, h, w)], dim=-1).to(images.device, images.dtype)
    warped = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return torch.where(fires.to(images.device)[:, None, None, None], warped, images)
