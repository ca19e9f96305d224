"""Domain normalisation: each band of a feature standardised over a recording, a speaker or a corpus.

Recordings of one speaker or corpus share a channel, a microphone and a voice; standardising each
frequency band (or MFCC, or descriptor) with the statistics of that group removes much of what
tells corpora apart before the picture is made. The statistics come from audio alone: labels
are never read. For a test corpus they come from its own unlabelled audio, which is transductive
use of the test data; the mode is recorded with the features, in every tree and checkpoint, and
evaluation reports say it was used.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ConfigError

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


def unlabelled_groups(utterances: Sequence, statistics: dict[str, BandStatistics], *, fallback: str,
                      clusters: int, seed: int = 0) -> dict[str, str]:
    """Groups for the recordings of corpora without speaker labels: the whole corpus (`fallback`
    "corpus"), or `clusters` groups of recordings with similar long-term band means (k-means), which
    stand in for speakers. Keys are source paths; corpora with speakers are left out."""
    unknown = corpora_without_speakers(utterances)
    groups: dict[str, str] = {}
    for corpus in sorted(unknown):
        members = sorted({u.path for u in utterances if u.corpus == corpus})
        if fallback == "corpus" or len(members) <= clusters:
            groups |= {path: f"corpus:{corpus}" for path in members}
            continue
        from sklearn.cluster import KMeans
        from sklearn.preprocessing import StandardScaler

        profiles = StandardScaler().fit_transform(np.stack([statistics[p].mean for p in members]))
        labels = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(profiles)
        groups |= {path: f"cluster:{corpus}:{label}" for path, label in zip(members, labels)}
    return groups


@dataclasses.dataclass
class GroupStatistics:
    """Which group each recording of a tree belongs to, and each group's statistics: kept with the tree
    (``normalisation.json``) so that a resumed or extended job standardises exactly as before."""

    mode: str
    assignment: dict[str, str]  # recording (source path) -> group
    groups: dict[str, BandStatistics]

    def of_recording(self, path: str) -> BandStatistics:
        return self.groups[self.assignment[path]]

    def extended(self, utterances: Sequence, statistics: dict[str, BandStatistics], settings) -> GroupStatistics:
        """With the groups of new recordings (`statistics` by source path); a new recording may not join
        a group that already has statistics, which would change pictures already made."""
        groups = unlabelled_groups(utterances, statistics, fallback=settings.unknown_speakers,
                                   clusters=settings.clusters) if settings.mode == "speaker" else {}
        assignment = {u.path: group_of(u, settings.mode, groups) for u in utterances if u.path in statistics}
        joined = sorted({g for g in assignment.values() if g in self.groups})
        if joined:
            raise ConfigError(f"new recordings of {joined[:3]} would change normalisation statistics that pictures "
                              "in this tree were made with; render them into a new folder")
        members: dict[str, list[BandStatistics]] = defaultdict(list)
        for path, group in assignment.items():
            members[group].append(statistics[path])
        return GroupStatistics(self.mode, {**self.assignment, **assignment},
                               {**self.groups, **{g: pooled(s) for g, s in members.items()}})

    def as_dict(self) -> dict:
        return {"mode": self.mode, "assignment": self.assignment,
                "groups": {g: s.as_dict() for g, s in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> GroupStatistics:
        return cls(data["mode"], dict(data["assignment"]),
                   {g: BandStatistics.from_dict(s) for g, s in data["groups"].items()})
