"""Pseudo-speakers: recordings grouped by a pretrained speaker encoder, for corpora without speaker labels.

The encoder is resemblyzer's GE2E network (Wan et al. 2018), whose weights ship inside its wheel, so it
works offline (the optional extra ``speakers``). Each recording becomes a unit vector of 256 values;
recordings are grouped by agglomerative clustering (average linkage, cosine distance) cut at a fixed
distance, so the number of speakers follows from the data by a stated rule rather than a guess.
The cut was calibrated on RAVDESS + TESS with their speaker labels hidden (labels read only to score the
adjusted Rand index; ``scripts/speaker_study.py``).

Emotional speech moves a recording's embedding almost as far as a change of speaker does (on EMO-DB a
recording is as close to another speaker's of its emotion as to its own speaker's of another emotion),
so pseudo-speakers can turn out to be speaker x emotion cells; ``spectro.normalise`` guards against that.

Nothing here imports torch or resemblyzer until an embedding is first asked for.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

ENCODER_THRESHOLD = 0.375  # cosine distance: best mean ARI over RAVDESS and TESS, labels hidden (README)
MIN_SPEECH = 1600  # samples at 16 kHz: below this the encoder's silence trimming left too little to embed

_encoder = None  # this process's encoder, loaded on first use


def _load_encoder():
    global _encoder
    if _encoder is None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as error:
            raise ConfigError("normalise.unknown_speakers=encoder needs the speaker encoder: pip install "
                              f"'spectro-ser[speakers]' ({error})") from error
        _encoder = VoiceEncoder(device="cpu", verbose=False)
    return _encoder


def embed(y: np.ndarray, sr: int) -> np.ndarray:
    """A recording's speaker embedding: a unit vector of 256 float32 values.

    The encoder's own conditioning (resampling to 16 kHz, level, voice-activity trimming) runs first;
    where the trimming leaves almost nothing (a short or quiet clip), the untrimmed audio is embedded
    instead, so every recording gets a vector.
    """
    import torch
    from resemblyzer import preprocess_wav

    encoder = _load_encoder()
    torch.set_num_threads(1)  # called in the image job's workers, one per core
    speech = preprocess_wav(np.asarray(y, dtype=np.float32), source_sr=sr)
    if len(speech) < MIN_SPEECH:
        import librosa

        speech = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=16000)
    vector = encoder.embed_utterance(speech.astype(np.float32))
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def cluster(embeddings: np.ndarray, threshold: float = ENCODER_THRESHOLD) -> np.ndarray:
    """Group labels (0, 1, ...) of `embeddings` (rows): average-linkage clusters of cosine distance, cut at
    `threshold`. Deterministic, and numbered in order of each group's first recording."""
    from scipy.cluster.hierarchy import fcluster, linkage

    vectors = np.asarray(embeddings, dtype=np.float64)
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=int)
    raw = fcluster(linkage(vectors, method="average", metric="cosine"), t=threshold, criterion="distance")
    _, first, labels = np.unique(raw, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber by first appearance
    return order[labels]
