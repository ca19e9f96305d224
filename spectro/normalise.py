"""Domain normalisation: each band of a feature standardised over a recording, a speaker or a corpus.

Recordings of one speaker or corpus share a channel, a microphone and a voice; standardising each
frequency band (or MFCC, or descriptor) with the statistics of that group removes much of what
tells corpora apart before the picture is made. The statistics come from audio alone: labels
are never read. For a test corpus they come from its own unlabelled audio, which is transductive
use of the test data; the mode is recorded with the features, in every tree and checkpoint, and
evaluation reports say it was used.

Speaker statistics rest on two assumptions: the speakers are known (where they are not, groups are
found in the audio: k-means clusters, or pseudo-speakers from a speaker encoder, ``spectro.speakers``),
and each speaker's recordings span several emotions. Where each speaker shows one emotion, its
statistics remove the emotion itself; the guard (`guarded`) notices from the audio and gives that
corpus corpus statistics instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("none", "utterance", "speaker", "corpus")


@dataclasses.dataclass
class BandStatistics:
    """Running per-band moments over frames: enough for a mean and a standard deviation."""

    count: float
    total: np.ndarray  # (bands,)
    total_sq: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> BandStatistics:
        """Moments of (bands, frames) values."""
        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.shape[1]), v.sum(axis=1), np.square(v).sum(axis=1))

    def __add__(self, other: BandStatistics) -> BandStatistics:
        return BandStatistics(self.count + other.count, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1.0)

    @property
    def std(self) -> np.ndarray:
        variance = self.total_sq / max(self.count, 1.0) - np.square(self.mean)
        return np.sqrt(np.maximum(variance, 1e-8))

    def standardise(self, values: np.ndarray) -> np.ndarray:
        """(values - mean) / std per band, as float32."""
        if values.shape[0] != self.total.shape[0]:
            raise ConfigError(f"values have {values.shape[0]} bands; the statistics were taken over "
                              f"{self.total.shape[0]}")
        return ((values - self.mean[:, None]) / self.std[:, None]).astype(np.float32)

    def as_dict(self) -> dict:
        return {"count": self.count, "total": self.total.tolist(), "total_sq": self.total_sq.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> BandStatistics:
        return cls(float(data["count"]), np.asarray(data["total"], dtype=np.float64),
                   np.asarray(data["total_sq"], dtype=np.float64))


def valid_frames(window, *, hop_length: int, n_frames: int) -> slice:
    """The frames of a window's values that analyse real audio rather than its zero padding."""
    if window.audio is None:
        return slice(0, n_frames)
    low, high = window.audio
    return slice(min(-(-low // hop_length), n_frames - 1), max(min(-(-high // hop_length), n_frames), 1))


def pooled(statistics: Iterable[BandStatistics]) -> BandStatistics:
    items = list(statistics)
    if not items:
        raise ConfigError("no statistics to pool")
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def group_of(utterance, mode: str, groups: dict[str, str] | None = None) -> str:
    """The group whose statistics standardise `utterance`: itself, its speaker, or its corpus.

    `groups` maps a recording (source path) to a group found without labels, for corpora whose
    speakers are unknown (see `unlabelled_groups`).
    """
    if mode == "utterance":
        return utterance.path
    if mode == "corpus":
        return f"corpus:{utterance.corpus}"
    if mode == "speaker":
        return (groups or {}).get(utterance.path) or f"speaker:{utterance.speaker}"
    raise ConfigError(f"normalise.mode={mode!r} must be one of {list(MODES)}")


def corpora_without_speakers(utterances: Sequence) -> set[str]:
    """Corpora whose every speaker has a single recording: a folder corpus without speaker folders."""
    per_speaker: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        per_speaker[u.speaker].add(u.path)
    corpora: dict[str, list[int]] = defaultdict(list)
    for u in {u.speaker: u for u in utterances}.values():
        corpora[u.corpus].append(len(per_speaker[u.speaker]))
    return {corpus for corpus, sizes in corpora.items() if max(sizes) == 1 and len(sizes) > 1}


def unlabelled_groups(utterances: Sequence, statistics: dict[str, BandStatistics], settings,
                      embeddings: dict[str, np.ndarray] | None = None, *, seed: int = 0) -> dict[str, str]:
    """Groups for the recordings of corpora without speaker labels, as ``settings.unknown_speakers`` says:
    the whole corpus (``corpus``), ``settings.clusters`` k-means groups of recordings with similar long-term
    band means (``clusters``), or pseudo-speakers clustered from speaker-encoder `embeddings` (``encoder``;
    ``spectro.speakers``). Keys are source paths; corpora with speakers are left out."""
    unknown = corpora_without_speakers(utterances)
    groups: dict[str, str] = {}
    for corpus in sorted(unknown):
        members = sorted({u.path for u in utterances if u.corpus == corpus})
        if settings.unknown_speakers == "encoder":
            from .speakers import cluster

            labels = cluster(np.stack([embeddings[p] for p in members]), settings.encoder_threshold)
            groups |= {path: f"pseudo:{corpus}:{label}" for path, label in zip(members, labels)}
            continue
        if settings.unknown_speakers == "corpus" or len(members) <= settings.clusters:
            groups |= {path: f"corpus:{corpus}" for path in members}
            continue
        from sklearn.cluster import KMeans
        from sklearn.preprocessing import StandardScaler

        profiles = StandardScaler().fit_transform(np.stack([statistics[p].mean for p in members]))
        labels = KMeans(n_clusters=settings.clusters, n_init=10, random_state=seed).fit_predict(profiles)
        groups |= {path: f"cluster:{corpus}:{label}" for path, label in zip(members, labels)}
    return groups


def intraclass_correlation(profiles: np.ndarray, groups: Sequence[str]) -> float | None:
    """The share of a dimension's variance that lies between `groups` (ICC(1) of one-way ANOVA, with the n0
    of Shrout & Fleiss for unequal group sizes), per dimension of `profiles` (recordings x dimensions); the
    median over the dimensions that vary. None where undefined (fewer than two groups, or no group with
    two recordings).

    The median, not the mean: a few dimensions that tell two voices apart almost perfectly (TESS's two
    speakers) would otherwise decide it, and what matters is how broadly the groups differ.
    """
    x = np.asarray(profiles, dtype=np.float64)
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    k, n = len(names), len(x)
    x = x[:, x.std(axis=0) > 1e-12]
    if k < 2 or n <= k or x.shape[1] == 0:
        return None
    sizes = np.bincount(index, minlength=k).astype(np.float64)
    means = np.stack([np.bincount(index, weights=column, minlength=k) for column in x.T], axis=1) / sizes[:, None]
    between = (sizes[:, None] * np.square(means - x.mean(axis=0))).sum(axis=0) / (k - 1)
    within = np.square(x - means[index]).sum(axis=0) / (n - k)
    n0 = (n - np.square(sizes).sum() / n) / (k - 1)
    return float(np.median((between - within) / np.maximum(between + (n0 - 1) * within, 1e-300)))


# The guard's thresholds on `intraclass_correlation` where nothing is known of the training corpora (a tree
# rendered on its own), per feature: midway between the highest value of true, balanced speakers and the lowest
# of speakers that each show one emotion, over RAVDESS, TESS and a generated corpus (never EMO-DB;
# scripts/speaker_study.py). Other features borrow the log-mel's.
GUARD_THRESHOLDS = {"stats": 0.219, "mel": 0.175}
# Where a model's training corpora are known (evaluate, predict: ``normalise.guard_reference``, the highest value
# of their balanced groups), the guard fires above a multiple of it instead, chosen over leave-one-corpus-out
# pairs (RAVDESS <-> TESS, the generated corpus's two languages) at the geometric midpoint between the highest
# ratio that must stay quiet and the lowest that must fire. For groups given by speaker labels: balanced
# speakers stay quiet, speakers that each show one emotion fire. For groups found in the audio (pseudo-speakers,
# clusters), which are formed to be alike and so hold more of the variance: only groupings that recover the
# speakers (adjusted Rand index 0.9 or more) stay quiet.
GUARD_RATIO = 1.72
GUARD_RATIO_FOUND = 1.15
FOUND_WITHOUT_LABELS = ("pseudo:", "cluster:")  # names of the groups found in the audio


def guard_threshold(settings, feature: str, *, found: bool = False) -> tuple[float, str]:
    """The guard's threshold for a corpus's groups (`found`: found in the audio, not given by labels), and how
    it was set: ``settings.guard_threshold``; else the ratio times ``settings.guard_reference``; else the
    calibrated value of `feature`."""
    if settings.guard_threshold is not None:
        return settings.guard_threshold, "normalise.guard_threshold"
    if settings.guard_reference is not None:
        ratio = GUARD_RATIO_FOUND if found else GUARD_RATIO
        return round(ratio * settings.guard_reference, 4), (f"{ratio} x {settings.guard_reference:.4f}, the training "
                                                            "corpora's value")
    return GUARD_THRESHOLDS.get(feature, GUARD_THRESHOLDS["mel"]), f"calibrated for {feature} without a model"


def relative_guard(features, training: Iterable[dict]):
    """`features` (a FeatureConfig) with ``normalise.guard_reference``, the highest value of the guard's statistic
    that the balanced groups of the training corpora showed (`training`: the records of ``normalisation.json``
    of the model's training trees for this input, as its checkpoint keeps them). Unchanged where the
    reference or the threshold is set, the guard is off, or the training left no value (checkpoints from
    before the guard)."""
    settings = features.normalise
    values = [g["value"] for record in training for g in record.get("guard", {}).values()
              if g["value"] is not None and not g["fired"]]
    if (settings.mode != "speaker" or settings.guard == "none" or settings.guard_threshold is not None
            or settings.guard_reference is not None or not values):
        return features
    return dataclasses.replace(features, normalise=dataclasses.replace(settings, guard_reference=round(max(values), 4)))


def guarded(utterances: Sequence, statistics: dict[str, BandStatistics], assignment: dict[str, str], settings,
            feature: str) -> tuple[dict[str, str], dict[str, dict]]:
    """The guard against speakers who each show one emotion: per corpus, how much of the recordings'
    band-mean variance lies between their groups (`intraclass_correlation`). Balanced speakers of acted
    corpora hold a sixth to a fifth of it; groups that are really speaker x emotion cells hold twice as
    much or more, and standardising them would remove the emotion itself. Where the value passes the
    threshold, ``normalise.guard: fallback`` gives the corpus's recordings the corpus's statistics instead.

    Returns the assignment (source path -> group) and, per corpus, the guard's record: its statistic, the
    threshold, the group count, whether it fired and what was done. Labels are never read.
    """
    corpora: dict[str, dict[str, None]] = defaultdict(dict)
    for u in utterances:
        if u.path in assignment:
            corpora[u.corpus][u.path] = None
    assignment, record = dict(assignment), {}
    for corpus, members in sorted(corpora.items()):
        paths = list(members)
        groups = [assignment[p] for p in paths]
        found = any(g.startswith(FOUND_WITHOUT_LABELS) for g in groups)
        threshold, rule = guard_threshold(settings, feature, found=found)
        value = intraclass_correlation(np.stack([statistics[p].mean for p in paths]), groups)
        fired = value is not None and value > threshold
        record[corpus] = {"statistic": "intraclass correlation of band means between groups (median over bands)",
                          "value": value, "threshold": threshold, "threshold_rule": rule, "found_without_labels": found,
                          "groups": len(set(groups)), "recordings": len(paths), "fired": fired,
                          "action": "corpus statistics" if fired else "group statistics"}
        if fired:
            log.warning("normalisation guard: corpus %s, %d groups hold %.3f of the band-mean variance (threshold "
                        "%.3f): they probably each carry one emotion; its %d recordings get corpus statistics",
                        corpus, len(set(groups)), value, threshold, len(paths))
            assignment |= {p: f"corpus:{corpus}" for p in paths}
    return assignment, record


@dataclasses.dataclass
class GroupStatistics:
    """Which group each recording of a tree belongs to, and each group's statistics: kept with the tree
    (``normalisation.json``) so that a resumed or extended job standardises exactly as before; `guard`
    holds the guard's record per corpus (see `guarded`)."""

    mode: str
    assignment: dict[str, str]  # recording (source path) -> group
    groups: dict[str, BandStatistics]
    guard: dict[str, dict] = dataclasses.field(default_factory=dict)

    def of_recording(self, path: str) -> BandStatistics:
        return self.groups[self.assignment[path]]

    def extended(self, utterances: Sequence, statistics: dict[str, BandStatistics], config,
                 embeddings: dict[str, np.ndarray] | None = None) -> GroupStatistics:
        """With the groups of new recordings (`statistics`, and speaker-encoder `embeddings` where
        ``normalise.unknown_speakers`` is encoder, by source path) under the settings of `config`, a
        FeatureConfig; a new recording may not join a group that already has statistics, which would
        change pictures already made."""
        settings = config.normalise
        groups = unlabelled_groups(utterances, statistics, settings, embeddings) if settings.mode == "speaker" else {}
        assignment = {u.path: group_of(u, settings.mode, groups) for u in utterances if u.path in statistics}
        guard = {}
        if settings.mode == "speaker" and settings.guard != "none":
            assignment, guard = guarded(utterances, statistics, assignment, settings, config.feature)
        joined = sorted({g for g in assignment.values() if g in self.groups})
        if joined:
            raise ConfigError(f"new recordings of {joined[:3]} would change normalisation statistics that pictures "
                              "in this tree were made with; render them into a new folder")
        members: dict[str, list[BandStatistics]] = defaultdict(list)
        for path, group in assignment.items():
            members[group].append(statistics[path])
        return GroupStatistics(self.mode, {**self.assignment, **assignment},
                               {**self.groups, **{g: pooled(s) for g, s in members.items()}}, {**self.guard, **guard})

    def as_dict(self) -> dict:
        return {"mode": self.mode, "assignment": self.assignment, "guard": self.guard,
                "groups": {g: s.as_dict() for g, s in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> GroupStatistics:
        return cls(data["mode"], dict(data["assignment"]),
                   {g: BandStatistics.from_dict(s) for g, s in data["groups"].items()}, dict(data.get("guard", {})))
