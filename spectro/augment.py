"""SpecAugment-style masking on spectrogram images (Park et al. 2019), for training batches only.

No ImageNet augmentations: a horizontal flip reverses time, and colour jitter means nothing here.
"""

from __future__ import annotations

import torch


def _band_mask(batch: int, length: int, *, count: int, max_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) booleans: `count` bands per row, each up to ``max_fraction * length`` wide."""
    positions = torch.arange(length)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    max_width = int(max_fraction * length)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
        start = (torch.rand(batch, 1, generator=generator) * (length - width + 1)).long()
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(images: torch.Tensor, *, time_masks: int, time_mask_width: float, freq_masks: int,
                 freq_mask_width: float, generator: torch.Generator) -> torch.Tensor:
    """Mask random time columns and frequency rows of (B, C, H, W) images with each image's mean.

    Parameters
    ----------
    time_masks, freq_masks : int >= 0
        Bands per image along width (time) and height (frequency).
    time_mask_width, freq_mask_width : float in [0, 1]
        Largest band width as a fraction of the image side.
    generator : torch.Generator
        The only source of randomness, so a run replays exactly on resume.
    """
    if images.ndim == 3:  # (B, F, T) matrices such as MFCCs: mask them like one-channel images
        return spec_augment(images[:, None], time_masks=time_masks, time_mask_width=time_mask_width,
                            freq_masks=freq_masks, freq_mask_width=freq_mask_width, generator=generator)[:, 0]
    b, _, h, w = images.shape
    cols = _band_mask(b, w, count=time_masks, max_fraction=time_mask_width, generator=generator)
    rows = _band_mask(b, h, count=freq_masks, max_fraction=freq_mask_width, generator=generator)
    masked = (rows[:, :, None] | cols[:, None, :])[:, None]  # (B, 1, H, W)
    fill = images.mean(dim=(2, 3), keepdim=True)
    return torch.where(masked, fill, images)
