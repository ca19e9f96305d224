"""`spectro predict`: emotion probabilities for new recordings, with a trained checkpoint.

Recordings are conditioned as in training; one longer than the training duration is scored in
windows of that duration (half-overlapping) whose probabilities are averaged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .audio import load_audio, peak_normalise, silence_bounds, split_windows
from .checkpoint import load_trained_model
from .config import FeatureConfig, from_dict
from .corpora import AUDIO_SUFFIXES
from .data import as_model_input
from .errors import DataError, SpectroError
from .features import feature_array
from .train import forward, resolve_device


@dataclasses.dataclass
class Prediction:
    path: str
    emotion: str | None = None
    probabilities: dict[str, float] | None = None
    segments: list[dict] | None = None  # start/end seconds, emotion, probabilities per window
    error: str | None = None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the audio files inside given folders (recursively, sorted)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        else:
            paths.append(item)
    return paths


def _windows(path: Path, features: FeatureConfig, hop_fraction: float) -> list[tuple[float, float, np.ndarray]]:
    audio = features.audio
    y = load_audio(path, sr=audio.sample_rate)
    start, end = silence_bounds(y, top_db=audio.trim_top_db) if audio.trim else (0, y.size)
    y, offset = y[start:end], start / audio.sample_rate  # times stay in the file's own clock
    if audio.normalise:
        y = peak_normalise(y, peak=audio.peak)
    if audio.duration is None:
        return [(offset, offset + y.size / audio.sample_rate, y)]
    windows = split_windows(y, sr=audio.sample_rate, duration=audio.duration, hop=audio.duration * hop_fraction)
    return [(offset + s, offset + s + audio.duration, w) for s, w in windows]


@torch.no_grad()
def predict_files(checkpoint: str | Path, paths: Iterable[str | Path], *, hop_fraction: float = 0.5,
                  device: str = "auto") -> Iterator[Prediction]:
    """Yield one Prediction per file; unreadable or empty files get `error` and the rest go on."""
    device = resolve_device(device)
    model, state = load_trained_model(checkpoint, device=device)
    inputs = {name: from_dict(FeatureConfig, f) for name, f in state["inputs"].items()}
    conditioning = next(iter(inputs.values()))  # training checked that every input conditions audio alike
    classes = list(state["classes"])
    for path in map(Path, paths):
        try:
            windows = _windows(path, conditioning, hop_fraction)
        except SpectroError as error:
            yield Prediction(str(path), error=str(error))
            continue
        batch = {name: as_model_input(torch.from_numpy(np.stack([feature_array(w, f) for _, _, w in windows]))).to(device)
                 for name, f in inputs.items()}  # windows share one length
        lengths = {name: torch.full((len(windows),), x.shape[-1]) for name, x in batch.items()}
        probs = torch.softmax(forward(model, batch, lengths), dim=1).cpu().numpy()
        mean = probs.mean(axis=0)
        as_dict = lambda p: {c: round(float(v), 6) for c, v in zip(classes, p)}  # noqa: E731
        yield Prediction(
            str(path), emotion=classes[int(mean.argmax())], probabilities=as_dict(mean),
            segments=[{"start": round(s, 3), "end": round(e, 3), "emotion": classes[int(p.argmax())],
                       "probabilities": as_dict(p)} for (s, e, _), p in zip(windows, probs)],
        )


def plot_probabilities(prediction: Prediction, out_dir: Path) -> Path:
    """A bar chart of one file's class probabilities, saved as ``out_dir/<stem>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if prediction.probabilities is None:
        raise DataError(f"{prediction.path} has no prediction to plot")
    out_dir.mkdir(parents=True, exist_ok=True)
    names, values = zip(*prediction.probabilities.items())
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 3))
    bars = ax.bar(names, values, color=["tab:orange" if n == prediction.emotion else "tab:blue" for n in names])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(Path(prediction.path).name, fontsize=9)
    fig.tight_layout()
    target = out_dir / f"{Path(prediction.path).stem}.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
