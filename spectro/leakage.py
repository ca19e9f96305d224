"""Who and what a model learnt from, kept in its checkpoint, and the check that keeps them out of tests.

A test set must share no speaker with the training or validation data (validation chose the
checkpoint) and no recording with the training data, under any name: recordings are compared by
the digest of their decoded audio (``spectro.audio.audio_digest``), which image trees record.
The record travels in every checkpoint, so `spectro evaluate` checks without the training trees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from .corpora import Utterance
from .errors import ConfigError


@dataclasses.dataclass
class TrainingRecord:
    train_speakers: list[str]
    val_speakers: list[str]
    train_audio: list[str]  # digests of the decoded training recordings

    @classmethod
    def of(cls, train: Sequence[Utterance], validation: Sequence[Utterance],
           train_digests: Iterable[str]) -> TrainingRecord:
        return cls(sorted({u.speaker for u in train}), sorted({u.speaker for u in validation}),
                   sorted({d for d in train_digests if d}))

    @classmethod
    def from_checkpoint(cls, state: dict) -> TrainingRecord | None:
        """The record of a checkpoint; None for checkpoints written before spectro kept one."""
        saved = state.get("training_record")
        return None if saved is None else cls(**saved)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self, name: str, utterances: Sequence[Utterance], digests: dict[str, str], *,
              against_validation: bool = True) -> None:
        """Refuse `utterances` (with `digests`: source path -> audio digest) as held-out set `name` if
        any speaker took part in training (or validation), or any recording's audio was trained on."""
        speakers = {u.speaker for u in utterances}
        roles = (("training", self.train_speakers), ("validation", self.val_speakers if against_validation else []))
        for role, known in roles:
            shared = sorted(speakers & set(known))
            if shared:
                raise ConfigError(f"speaker(s) {shared[:5]} of {name} took part in the model's {role} data; a test "
                                  "must hold speakers the model has never heard")
        trained = set(self.train_audio)
        same = sorted(u.path for u in utterances if digests.get(u.path) in trained)
        if same:
            raise ConfigError(f"recording(s) {same[:3]} of {name} hold the same audio as training recordings "
                              f"({len(same)} in all); a test must hold recordings the model has never heard")
