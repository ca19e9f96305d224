"""Classification metrics from scikit-learn, always over the fixed label list."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], *, labels: Sequence[int]) -> dict:
    """Accuracy, UAR (balanced accuracy: mean recall over the classes present), macro-F1 and the
    confusion matrix (rows = true class, in `labels` order)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("y_true is empty: no utterances to score")
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "uar": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(labels), average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(labels)).tolist(),
    }


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str], *, title: str = ""):
    """A matplotlib figure of the row-normalised confusion matrix, annotated with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{counts[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig
