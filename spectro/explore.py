"""`spectro explore`: where a checkpoint puts corpora in its embedding space, and how far apart they lie.

Each recording is embedded as the classifier sees it: the mean over its windows of the pooled
features the classifier reads (``scoring.recording_embeddings``). The embeddings of every corpus are
mapped to the plane together (t-SNE; UMAP where umap-learn is installed; or PCA) and drawn twice,
coloured by corpus and by emotion. A picture suggests a gap but cannot size one (t-SNE keeps
neighbourhoods, not distances), so the gap is also measured in the embedding space itself:

- the cross-validated balanced accuracy of a linear domain classifier (logistic regression) that
  tells the corpora apart, with folds grouped by speaker, so that it must recognise a corpus in
  speakers it has never seen rather than recognise speakers; chance is 1/k for k corpora;
- the silhouette of the corpus labels (1: corpora apart, 0: mixed, below 0: interleaved).

Both are given over all corpora, for each pair, and within each emotion (is the gap the same for
angry and for sad speech?), beside the silhouette of the emotions within each corpus (what closing
the gap should keep). Emotions never fit the map or the domain classifier.

Writes ``embedding.csv`` (path, corpus, speaker, emotion, x, y per recording), ``by_corpus.png``,
``by_emotion.png``, ``separability.json`` and ``separability.png``. The same inputs and seed give the
same coordinates, numbers and figures.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .checkpoint_file import load_trained_model
from .corpora import Utterance
from .data import ImageSet
from .errors import ConfigError
from .evaluate import Options, TestSet, read_test_sets
from .fileio import atomic_open
from .leakage import TrainingRecord
from .locks import job_lock
from .models import has_pooled_features
from .scoring import recording_embeddings, resolve_device, scoring_autocast

METHODS = ("tsne", "umap", "pca")
OUTPUTS = ("embedding.csv", "by_corpus.png", "by_emotion.png", "separability.json", "separability.png")
MAP_DIMENSIONS = 50  # t-SNE and UMAP read the first principal components: the usual denoising, and faster
PROBE_C = 0.1  # the domain classifier's regularisation: a linear probe of 1280 features on a few thousand points


@dataclasses.dataclass
class Embedded:
    """The recordings of every corpus, one row each: embedding, corpus (set name) and utterance."""

    vectors: np.ndarray  # (N, F)
    corpora: list[str]
    utterances: list[Utterance]


def explore_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, corpora: Sequence[tuple[str, str]] = (),
                       image_trees: dict[str, str] | None = None, corpus_options: dict | None = None,
                       method: str = "tsne", seed: int = 0, folds: int = 5, workers: int | None = None,
                       device: str = "auto", progress: bool = True) -> dict:
    """Embed the recordings of `corpora` (rendered into ``out_dir/images``) and `image_trees` with the
    checkpoint's model, map them to the plane with `method`, measure how separable the corpora are
    (`folds` speaker-grouped folds), write every output into `out_dir` and return the report."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} must be one of {list(METHODS)}")
    if folds < 2:
        raise ConfigError(f"folds={folds} must be at least 2")
    if not corpora and not image_trees:
        raise ConfigError("nothing to explore: pass --corpus NAME=PATH or --images NAME=DIR")
    out_dir = Path(out_dir)
    opts = Options(corpora=list(corpora), image_trees=dict(image_trees or {}), corpus_options=corpus_options,
                   workers=workers, device=device, progress=progress)
    with job_lock(out_dir, "spectro explore"):
        state, tests, embedded = embed_corpora(checkpoint, out_dir / "images", opts)
        coordinates = plane_coordinates(embedded.vectors, method=method, seed=seed)
        report = {"checkpoint": str(checkpoint), "run": state["config"]["run"]["name"], "model": state["model_name"],
                  "classes": list(state["classes"]), "method": method, "seed": seed,
                  "embedding": f"mean over each recording's windows of the {embedded.vectors.shape[1]} pooled "
                               "features the classifier reads",
                  "corpora": _describe_corpora(state, tests, embedded)}
        report |= separability_report(embedded, list(state["classes"]), folds=folds)
        _write_coordinates(out_dir / "embedding.csv", embedded, coordinates)
        title = f"{report['run']} ({report['model']}), {method}"
        _save(out_dir / "by_corpus.png", scatter_figure(coordinates, embedded.corpora, f"{title}: by corpus"))
        _save(out_dir / "by_emotion.png", scatter_figure(coordinates, [u.emotion for u in embedded.utterances],
                                                         f"{title}: by emotion", order=report["classes"]))
        _save(out_dir / "separability.png", separability_figure(report, title=report["run"]))
        with atomic_open(out_dir / "separability.json", "w") as handle:
            json.dump(report, handle, indent=2)
    return report


def embed_corpora(checkpoint: str | Path, image_dir: Path, opts: Options) -> tuple[dict, dict[str, TestSet], Embedded]:
    """The checkpoint, its test sets (recordings of its classes, as `spectro evaluate` reads them) and
    every recording's embedding. Models without pooled features are refused before anything is rendered."""
    device = resolve_device(opts.device)
    model, state = load_trained_model(checkpoint, device=device)
    if not has_pooled_features(model):
        raise ConfigError(f"{checkpoint}: {state['model_name']} has no pooled features to embed; spectro explore "
                          "reads single-input ImageNet CNNs (resnet*, vgg*, efficientnet_*), not scikit-learn "
                          "baselines, sequence models or multi-input models")
    tests = read_test_sets(checkpoint, state, image_dir, opts)
    vectors, names, utterances = [], [], []
    for name, test in tests.items():
        if not test.rows:
            raise ConfigError(f"corpus {name}: no utterance of the classes {list(state['classes'])}")
        images = ImageSet([p for p, _ in test.rows], [u for _, u in test.rows], state["classes"],
                          desc=f"{name} images", progress=opts.progress)
        vectors.append(recording_embeddings(model, images, device=device,
                                            batch_size=2 * state["config"]["train"]["batch_size"],
                                            autocast=scoring_autocast(state, device)).numpy())
        names += [name] * len(images)
        utterances += images.utterances
    return state, tests, Embedded(np.concatenate(vectors).astype(np.float64), names, utterances)


def plane_coordinates(vectors: np.ndarray, *, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """Two coordinates per row of `vectors`, from its standardised features (each on the same footing,
    whatever its scale): their first two principal components (``pca``), or t-SNE / UMAP of the first
    `MAP_DIMENSIONS` components. Fixed by `seed`."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    n = len(vectors)
    if n < 4:
        raise ConfigError(f"{n} recording(s) are too few to map; give corpora with at least 4 recordings in all")
    scaled = StandardScaler().fit_transform(vectors)
    components = PCA(n_components=min(MAP_DIMENSIONS, n, scaled.shape[1]), svd_solver="full",
                     random_state=seed).fit_transform(scaled)
    if method == "pca":
        return components[:, :2]
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError("method umap needs umap-learn (pip install umap-learn); t-SNE (tsne) needs nothing "
                              "more") from None
        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(components)
    # One OpenMP thread: beside torch's own OpenMP runtime, t-SNE's threads spin against it (on a busy 2-core
    # machine 48 points took 40 s instead of under a second).
    with threadpool_limits(1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
                    random_state=seed).fit_transform(components)


def domain_separability(vectors: np.ndarray, domains: Sequence[str], speakers: Sequence[str], *,
                        folds: int = 5) -> dict:
    """How well the embeddings tell `domains` apart, for recordings with these `speakers`.

    ``balanced_accuracy``: out-of-fold predictions of a standardised logistic regression (classes
    weighted equally, whatever the corpora's sizes), each fold's speakers held out of its fitting;
    ``chance``: 1/k for k domains. ``silhouette``: of the domain labels on the embeddings standardised
    over these recordings. ``per_corpus``: each domain's share recognised (its recall; chance 1/k too) and
    its recordings' mean silhouette, since one corpus may stand apart while the others mix. Folds are
    not shuffled, so the numbers are fixed by the inputs alone.
    A domain with fewer than two speakers cannot be held out by speaker and gives None, with the reason.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score, silhouette_samples
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = list(dict.fromkeys(domains))
    domains, speakers = np.asarray(domains), np.asarray(speakers)
    result = {"corpora": names, "n": int(len(domains)), "speakers": len(set(speakers.tolist())),
              "chance": 1 / len(names) if names else None, "balanced_accuracy": None, "silhouette": None}
    few = [d for d in names if len(set(speakers[domains == d].tolist())) < 2]
    if len(names) < 2 or few:
        return {**result, "reason": "needs two corpora" if len(names) < 2 else f"{few}: fewer than 2 speakers"}
    labels = np.array([names.index(d) for d in domains])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, class_weight="balanced", max_iter=5000))
    splitter = StratifiedGroupKFold(n_splits=min(folds, result["speakers"]))
    predicted = cross_val_predict(probe, vectors, labels, groups=speakers, cv=splitter)
    recalls = recall_score(labels, predicted, labels=range(len(names)), average=None)
    widths = silhouette_samples(StandardScaler().fit_transform(vectors), labels)
    return {**result, "folds": splitter.n_splits, "balanced_accuracy": float(recalls.mean()),
            "silhouette": float(widths.mean()),
            "per_corpus": {d: {"recall": float(recalls[i]), "silhouette": float(widths[labels == i].mean())}
                           for i, d in enumerate(names)}}


def separability_report(embedded: Embedded, classes: Sequence[str], *, folds: int = 5) -> dict:
    """Domain separability over all corpora, per pair and within each emotion, and the silhouette of the
    emotions within each corpus and over all of them."""
    corpora, vectors = np.asarray(embedded.corpora), embedded.vectors
    speakers = np.asarray([u.speaker for u in embedded.utterances])
    emotions = np.asarray([u.emotion for u in embedded.utterances])
    measure = lambda rows: domain_separability(vectors[rows], corpora[rows].tolist(), speakers[rows].tolist(),
                                               folds=folds)
    names = list(dict.fromkeys(embedded.corpora))
    pairs = {f"{a} vs {b}": measure(np.isin(corpora, [a, b])) for a, b in itertools.combinations(names, 2)}
    silhouettes = {name: _emotion_silhouette(vectors[corpora == name], emotions[corpora == name]) for name in names}
    return {"domain": {"all": measure(np.ones(len(corpora), dtype=bool)), "pairs": pairs,
                       "by_emotion": {e: measure(emotions == e) for e in classes if (emotions == e).any()}},
            "emotion_silhouette": {**silhouettes, "all": _emotion_silhouette(vectors, emotions)}}


def _emotion_silhouette(vectors: np.ndarray, emotions: np.ndarray) -> float | None:
    """How clearly emotions group in the standardised embeddings (None with fewer than two emotions)."""
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    if not 2 <= len(set(emotions.tolist())) < len(emotions):
        return None
    return float(silhouette_score(StandardScaler().fit_transform(vectors), emotions))


def _describe_corpora(state: dict, tests: dict[str, TestSet], embedded: Embedded) -> dict:
    """Per corpus: recordings, speakers, those the model heard in training or validation (a gap between
    corpora it learnt from and the others is expected), and the recordings of other classes left out."""
    record = TrainingRecord.from_checkpoint(state)
    heard = set(record.train_speakers) | set(record.val_speakers) if record else None
    described = {}
    for name, test in tests.items():
        speakers = {u.speaker for c, u in zip(embedded.corpora, embedded.utterances) if c == name}
        described[name] = {"recordings": len(test.rows), "speakers": len(speakers),
                           "speakers_heard_in_training": len(speakers & heard) if heard is not None else None,
                           "dropped": test.dropped, **test.skipped}
    return described


def _write_coordinates(path: Path, embedded: Embedded, coordinates: np.ndarray) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "corpus", "speaker", "emotion", "x", "y"])
        for corpus, utt, (x, y) in zip(embedded.corpora, embedded.utterances, coordinates):
            writer.writerow([utt.path, corpus, utt.speaker, utt.emotion, f"{x:.6f}", f"{y:.6f}"])


def scatter_figure(coordinates: np.ndarray, labels: Sequence[str], title: str, *, order: Sequence[str] = ()):
    """The plane, one point per recording coloured by its label. Points are drawn in a fixed shuffled order,
    so no label is hidden under another just because it came later."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in order if n in set(labels)] or list(dict.fromkeys(labels))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colours = np.array([palette(names.index(label) % palette.N) for label in labels])
    shuffled = np.random.default_rng(0).permutation(len(labels))
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(coordinates[shuffled, 0], coordinates[shuffled, 1], c=colours[shuffled], s=9, alpha=0.75,
               linewidths=0)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=palette(i % palette.N),
                          label=f"{name} ({sum(label == name for label in labels)})") for i, name in enumerate(names)]
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def separability_rows(report: dict) -> list[tuple[str, dict]]:
    """What the figure and the table show, one row per measured set: all corpora, each corpus among them
    (its recall as the accuracy), each pair, and all corpora within each emotion."""
    domain, overall = report["domain"], report["domain"]["all"]
    corpora = [(f"  {name} among all", {"n": report["corpora"][name]["recordings"], "chance": overall["chance"],
                                        "balanced_accuracy": m["recall"], "silhouette": m["silhouette"]})
               for name, m in overall.get("per_corpus", {}).items()]
    return [(f"all ({len(overall['corpora'])} corpora)", overall), *corpora, *domain["pairs"].items(),
            *((f"within {e}", m) for e, m in domain["by_emotion"].items())]


def separability_figure(report: dict, *, title: str = ""):
    """Two panels, one row per measured set (`separability_rows`): the domain classifier's balanced
    accuracy (a corpus's recall on its own rows) with its chance level, and the corpus silhouette."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = separability_rows(report)
    value = lambda m, key: np.nan if m.get(key) is None else m[key]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.35 * len(rows)), sharey=True)
    where = np.arange(len(rows))[::-1]
    left.barh(where, [value(m, "balanced_accuracy") for _, m in rows], color="tab:blue")
    left.scatter([value(m, "chance") for _, m in rows], where, marker="|", s=200, color="black", label="chance",
                 zorder=3)
    left.set_xlim(0, 1)
    left.set_xlabel("domain classifier, speaker-grouped CV: balanced accuracy (a corpus: its recall)")
    left.legend(loc="lower left", fontsize=8, framealpha=1)
    right.barh(where, [value(m, "silhouette") for _, m in rows], color="tab:orange")
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlim(-1, 1)
    right.set_xlabel("silhouette of the corpus labels")
    left.set_yticks(where, [name for name, _ in rows], fontsize=8)
    fig.suptitle(f"how separable the corpora are: {title}", fontsize=10)
    fig.tight_layout()
    return fig


def _save(path: Path, figure) -> None:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def describe_separability(report: dict) -> str:
    """The printed table (`separability_rows`): recordings, the domain classifier against chance, and the
    silhouette; then the emotion silhouettes."""
    rows = separability_rows(report)
    number = lambda v: "-" if v is None else f"{v:.3f}"
    width = max(len(name) for name, _ in rows)
    lines = [f"{'corpora':<{width}}  {'n':>6}  {'domain acc':>10}  {'chance':>6}  {'silhouette':>10}"]
    lines += [f"{name:<{width}}  {m['n']:>6}  {number(m['balanced_accuracy']):>10}  {number(m['chance']):>6}  "
              f"{number(m['silhouette']):>10}" + (f"  ({m['reason']})" if "reason" in m else "") for name, m in rows]
    lines.append("emotion silhouette: " + ", ".join(f"{name} {number(v)}"
                                                    for name, v in report["emotion_silhouette"].items()))
    return "\n".join(lines)
