"""Classification metrics from scikit-learn, always over the fixed label list, and the one way a set
of scored recordings becomes a report's numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

# The headline metrics, in the order every table, log and summary shows them, with their printed names.
METRICS = ("accuracy", "uar", "macro_f1")
METRIC_NAMES = {"accuracy": "accuracy", "uar": "UAR", "macro_f1": "macro-F1"}


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], *, labels: Sequence[int]) -> dict:
    """Accuracy, UAR (balanced accuracy: mean recall over the classes present), macro-F1 and the
    confusion matrix (rows = true class, in `labels` order)."""
    import warnings

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("y_true is empty: no utterances to score")
    with warnings.catch_warnings():  # predicting a class a corpus lacks is a plain error here, not a caveat
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        uar = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "uar": uar,
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


def detailed_metrics(y_true: Sequence[int], y_pred: Sequence[int], *, class_names: Sequence[str],
                     groups: Sequence[str] | None = None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Everything a report table needs, over the fixed class list.

    Adds to `classification_metrics`: Cohen's kappa, Matthews correlation, per-class precision,
    recall, F1 and support, the row-normalised confusion matrix, and bootstrap 95% intervals for
    accuracy, UAR and macro-F1 (`bootstrap_intervals`: whole `groups`, e.g. speakers, resampled when
    given, else utterances).
    """
    from sklearn.metrics import cohen_kappa_score, matthews_corrcoef, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    base = classification_metrics(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    counts = np.asarray(base["confusion"], dtype=float)
    return {
        **base,
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion_normalised": (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).round(4).tolist(),
        "ci95": bootstrap_intervals(y_true, y_pred, labels=labels, groups=groups, n_bootstrap=n_bootstrap, seed=seed),
        "ci_resamples": "speakers" if groups is not None else "utterances",
        "n": int(y_true.size),
    }


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, *, labels: Sequence[int],
                        groups: Sequence[str] | None = None, n_bootstrap: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of accuracy, UAR and macro-F1.

    With `groups` (one per utterance, e.g. its speaker) whole groups are resampled with replacement:
    utterances of one speaker are not independent, and a corpus of ten speakers is ten draws, not
    hundreds. A resample lacking a class still counts for UAR (over the classes present).
    """
    import warnings

    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    if groups is not None:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1]
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        draws = [np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
                 for _ in range(n_bootstrap)]
    else:
        draws = list(rng.integers(0, y_true.size, size=(n_bootstrap, y_true.size)))
    scores = {"accuracy": [], "uar": [], "macro_f1": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample may miss a class
        for d in draws:
            scores["accuracy"].append(float((y_true[d] == y_pred[d]).mean()))
            scores["uar"].append(balanced_accuracy_score(y_true[d], y_pred[d]))
            scores["macro_f1"].append(f1_score(y_true[d], y_pred[d], labels=list(labels), average="macro",
                                               zero_division=0))
    tail = 100 * (1 - level) / 2
    return {name: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
            for name, values in scores.items()}


def score_recordings(probabilities: np.ndarray, utterances: Sequence, classes: Sequence[str], *,
                     present_classes: bool = False, n_bootstrap: int = 1000) -> tuple[dict, np.ndarray]:
    """The metrics of scored recordings (`probabilities` (N, C) in the order of `utterances`, whose emotions
    are among `classes`), with intervals that resample speakers; and the probabilities decided on.

    With `present_classes` the decision is among the classes the recordings have: the others cannot be
    right here, so their probabilities are set to 0 and the rest renormalised.
    """
    labels = np.array([list(classes).index(u.emotion) for u in utterances])
    excluded = []
    if present_classes:
        absent = [i for i in range(len(classes)) if i not in set(labels.tolist())]
        excluded = [classes[i] for i in absent]
        probabilities = np.array(probabilities, dtype=np.float64)
        probabilities[:, absent] = 0.0
        probabilities /= probabilities.sum(axis=1, keepdims=True).clip(min=1e-12)
    metrics = detailed_metrics(labels, np.asarray(probabilities).argmax(1), class_names=classes,
                               n_bootstrap=n_bootstrap, groups=[u.speaker for u in utterances])
    return {**metrics, "speakers": len({u.speaker for u in utterances}), "classes_excluded": excluded}, probabilities


def describe_scores(metrics: dict, *, extra: Sequence[str] = ()) -> str:
    """One line: n, then each headline metric with its 95% interval where known, then `extra` keys."""
    ci = metrics.get("ci95") or {}
    parts = [f"n {metrics['n']}"] if "n" in metrics else []
    for key in METRICS:
        interval = f" [{ci[key][0]:.3f}, {ci[key][1]:.3f}]" if key in ci else ""
        parts.append(f"{METRIC_NAMES[key]} {metrics[key]:.3f}{interval}")
    parts += [f"{key} {metrics[key]:.3f}" for key in extra]
    return "  ".join(parts)
