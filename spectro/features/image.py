"""Turning a feature matrix into the 224x224x3 uint8 picture an ImageNet CNN takes."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from ..errors import ConfigError

CHANNEL_MAPPINGS = ("colormap", "grey", "deltas")


@functools.lru_cache(maxsize=8)
def _colormap_table(name: str) -> np.ndarray:
    import matplotlib

    if name not in matplotlib.colormaps:
        raise ConfigError(f"colormap={name!r} is not a matplotlib colour map")
    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


@functools.lru_cache(maxsize=4)
def _savgol_weights(width: int, order: int) -> np.ndarray:
    """Weights giving the `order`-th derivative at the centre of a degree-`order` least-squares
    polynomial through `width` points (Savitzky-Golay, as ``scipy.signal.savgol_coeffs(use="dot")``)."""
    positions = np.arange(width) - width // 2
    return math.factorial(order) * np.linalg.pinv(positions[:, None] ** np.arange(order + 1))[order]


def delta(matrix: np.ndarray, *, order: int, width: int = 9) -> np.ndarray:
    """Local derivative along time, as ``librosa.feature.delta(matrix, width=width, order=order, mode="nearest")``:
    edge frames are repeated beyond the ends (librosa's default "interp" edges are 30x slower per image)."""
    from scipy.ndimage import correlate1d

    return correlate1d(np.asarray(matrix, dtype=np.float32), _savgol_weights(width, order), axis=1,
                       mode="nearest").astype(np.float32, copy=False)


def _deltas(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return delta(matrix, order=1), delta(matrix, order=2)


# Fixed scales, so a pixel means the same slope in every image: the 99th percentiles of |delta|
# and |delta-delta| of [0, 1]-scaled log-mel frames measured on EMO-DB and RAVDESS speech.
DELTA_SCALE, DELTA2_SCALE = 0.1, 0.05


def _centre_scale(delta: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(0.5 + 0.5 * delta / scale, 0.0, 1.0)


def to_image(matrix: np.ndarray, *, size: int = 224, channels: str = "deltas",
             colormap: str = "viridis") -> np.ndarray:
    """Render a (frequency, time) matrix with values in [0, 1] as an RGB image.

    Parameters
    ----------
    matrix : np.ndarray [shape=(n_bins, n_frames)]
        Row 0 is the lowest frequency; it ends up at the bottom of the picture.
    size : int >= 16
        Output height and width; both axes are resampled bilinearly.
    channels : {"colormap", "grey", "deltas"}
        ``colormap`` maps values through a matplotlib colour map (as in the published work);
        ``grey`` replicates the values; ``deltas`` stacks values, delta and delta-delta.
    colormap : str
        Matplotlib colour-map name, used with ``channels="colormap"``.

    Returns
    -------
    image : np.ndarray [shape=(size, size, 3), dtype=uint8]
    """
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ConfigError(f"matrix.shape={matrix.shape} must be a non-empty 2-D (frequency, time) array")
    if channels not in CHANNEL_MAPPINGS:
        raise ConfigError(f"channels={channels!r} must be one of {CHANNEL_MAPPINGS}")
    if size < 16:
        raise ConfigError(f"size={size} must be at least 16")
    matrix = np.clip(matrix, 0.0, 1.0)
    if channels == "deltas":
        delta, delta2 = _deltas(matrix)
        planes = [matrix, _centre_scale(delta, DELTA_SCALE), _centre_scale(delta2, DELTA2_SCALE)]
    else:
        planes = [matrix]
    resized = [np.flipud(_resize(plane, size)) for plane in planes]
    levels = [np.clip(plane * 255.0 + 0.5, 0, 255).astype(np.uint8) for plane in resized]
    if channels == "colormap":
        return _colormap_table(colormap)[levels[0]]
    if channels == "grey":
        return np.repeat(levels[0][:, :, None], 3, axis=2)
    return np.stack(levels, axis=2)
