"""`spectro predict`: the command-line shell over ``spectro.Predictor``, plus input listing, plots and the JSON
form of a prediction (what `spectro predict --json` prints and `spectro serve` answers)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .corpora import iter_audio_files
from .errors import DataError
from .inference import Prediction

log = logging.getLogger(__name__)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the audio files inside given folders (recursively, sorted); a file named twice
    (directly and through its folder, say) is listed once, where it first appears."""
    paths, skipped, seen = [], [], set()
    for item in map(Path, inputs):
        for path in iter_audio_files(item, skipped) if item.is_dir() else [item]:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                paths.append(path)
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    return paths


def prediction_record(prediction: Prediction, *, windows: bool) -> dict:
    """A Prediction as JSON-ready data: what `spectro predict --json` prints and `spectro serve` answers, so
    the two agree to the digit. Probabilities are rounded to 6 decimals, window times to milliseconds;
    fields that are None (an error's label, a recording's path when it came as samples) are left out.

    Parameters
    ----------
    windows : bool
        Also each window's start, end, label and probabilities (an ensemble's predictions have none).
    """
    rounded = lambda p: {c: round(v, 6) for c, v in p.items()}  # noqa: E731
    record = {k: v for k, v in dataclasses.asdict(prediction).items() if v is not None and k != "windows"}
    if "probabilities" in record:
        record["probabilities"] = rounded(record["probabilities"])
    if windows and prediction.windows is not None:
        record["windows"] = [{"start": round(w.start, 3), "end": round(w.end, 3), "label": w.label,
                              "probabilities": rounded(w.probabilities)} for w in prediction.windows]
    return record


def plot_paths(paths: list[Path], folder: Path) -> dict[str, Path]:
    """A chart file in `folder` for each input, named by its path below the inputs' common folder, so that
    two files with one name in different folders keep separate charts."""
    from .errors import ConfigError

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--plot {str(folder)!r} is a file; give a folder for the charts")
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return {str(p): folder / r.relative_to(common).with_suffix(".png") for p, r in zip(paths, resolved)}


def plot_probabilities(prediction: Prediction, path: Path) -> Path:
    """A bar chart of one recording's class probabilities, saved as the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if prediction.probabilities is None:
        raise DataError(f"{prediction.path} has no prediction to plot")
    path.parent.mkdir(parents=True, exist_ok=True)
    names, values = zip(*prediction.probabilities.items())
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 3))
    bars = ax.bar(names, values, color=["tab:orange" if n == prediction.label else "tab:blue" for n in names])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(Path(prediction.path).name if prediction.path else "recording", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
