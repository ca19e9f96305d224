"""Reading recordings, conditioning them (rate, silence, level) and cutting them into the windows models read."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from .config import AudioConfig, QualityConfig
from .errors import ConfigError, DataError


def load_audio(path, *, sr: int = 16000) -> np.ndarray:
    """Read any sample rate and channel count as mono float32 at `sr`.

    Parameters
    ----------
    path : str or path-like
        A file soundfile can read (WAV, FLAC, OGG, ...); other formats go through librosa/audioread.
    sr : int > 0
        Target sample rate in Hz.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]

    Raises
    ------
    DataError
        If the file cannot be decoded, is empty, silent, or holds non-finite samples.
    """
    import soundfile

    if sr <= 0:
        raise ConfigError(f"sr={sr} must be a positive integer")
    if not os.path.isfile(path):
        raise DataError(f"cannot read {path}: no such file")
    try:  # the path as the file system's bytes: a file name that is not valid UTF-8 reads too
        data, native_sr = soundfile.read(os.fsencode(path), dtype="float32")
    except soundfile.LibsndfileError as sf_error:
        data, native_sr = _load_with_librosa(path, sf_error)
    return to_mono(data, orig_sr=native_sr, sr=sr, source=str(path))


def to_mono(samples, *, orig_sr: int, sr: int, source: str = "the signal") -> np.ndarray:
    """Samples of any channel count and rate as checked mono float32 at `sr`: what every stage reads.

    Parameters
    ----------
    samples : array-like [shape=(n,) or (n, channels)]
        Channels last, as soundfile reads them.
    orig_sr, sr : int > 0
        Sample rate of `samples`, and the rate wanted, in Hz.
    source : str
        Named in errors.
    """
    y = np.asarray(samples, dtype=np.float32)
    if orig_sr <= 0:
        raise ConfigError(f"sample_rate={orig_sr} must be a positive integer")
    if y.ndim not in (1, 2):
        raise ConfigError(f"{source}: samples.shape={y.shape} must be (n,) or (n, channels)")
    if y.size == 0:
        raise DataError(f"cannot use {source}: it holds no samples")
    if y.ndim == 2:
        if y.shape[1] > y.shape[0]:
            raise ConfigError(f"{source}: samples.shape={y.shape} must be (n,) or (n, channels); transpose "
                              "channels-first audio")
        y = y.mean(axis=1)
    if not np.all(np.isfinite(y)):
        raise DataError(f"cannot use {source}: it holds NaN or infinite samples")
    if not np.any(y):
        raise DataError(f"cannot use {source}: the recording is silent (all samples are zero)")
    if orig_sr != sr:
        import soxr  # what librosa.resample(res_type="soxr_hq") calls, without importing librosa

        y = soxr.resample(y, orig_sr, sr, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


def decode_audio(data: bytes, *, source: str = "the upload", suffix: str = "") -> tuple[np.ndarray, int]:
    """A whole audio file's bytes (an upload, say) decoded at their own rate and channel count, as `load_audio`
    decodes a file before `to_mono`.

    soundfile reads the bytes in memory (WAV, FLAC, OGG/Opus, MP3, AIFF, AU); only what it cannot read is
    written to a temporary file for librosa/audioread, which need a path, and that file is deleted as soon
    as they are done, whatever happens.

    Parameters
    ----------
    source : str
        Names the audio in errors (never the temporary file's path).
    suffix : str
        The temporary file's suffix (".m4a"), which tells the fallback decoder the format.

    Raises
    ------
    DataError
        If no decoder can read the bytes (the reason of each), or there are none.
    """
    import io
    import tempfile

    import soundfile

    if not data:
        raise DataError(f"cannot decode {source}: it is empty (0 bytes)")
    try:
        samples, native_sr = soundfile.read(io.BytesIO(data), dtype="float32")
    except soundfile.LibsndfileError as sf_error:
        with tempfile.NamedTemporaryFile(prefix="spectro-upload-", suffix=suffix) as handle:
            handle.write(data)
            handle.flush()
            return _load_with_librosa(handle.name, sf_error, source=source)
    return samples, int(native_sr)


def _load_with_librosa(path, sf_error: Exception, *, source: str | None = None) -> tuple[np.ndarray, int]:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y, native_sr = librosa.load(path, sr=None, mono=True)
    except Exception as error:  # audioread raises many unrelated types
        fallback = str(error).replace(str(path), source or str(path)) or type(error).__name__
        reason = getattr(sf_error, "error_string", None) or str(sf_error)  # without the bytes path soundfile was given
        raise DataError(f"cannot decode {source or path}: {reason}; fallback decoder: {fallback}") from None
    return y.astype(np.float32), int(native_sr)


def silence_bounds(y: np.ndarray, *, top_db: float = 30.0) -> tuple[int, int]:
    """Sample range left after cutting leading and trailing frames quieter than `top_db` below the loudest.

    The rule of ``librosa.effects.trim`` (RMS of centred 512-sample frames every 128 samples), computed
    from running block energies: memory stays small however long the recording (librosa would
    hold every frame, 10x the signal).
    """
    hop, blocks_per_frame = 128, 4
    n_blocks = -(-y.size // hop)
    energy = np.zeros(n_blocks + blocks_per_frame)  # two empty blocks of centre padding on each side
    step = hop * 8192
    for start in range(0, y.size, step):
        block = y[start:start + step].astype(np.float64)
        block = np.pad(block, (0, -block.size % hop)).reshape(-1, hop)
        first = 2 + start // hop
        energy[first:first + len(block)] = np.einsum("ij,ij->i", block, block)
    running = np.concatenate([[0.0], np.cumsum(energy)])
    frames = 1 + y.size // hop
    frame_energy = running[blocks_per_frame:blocks_per_frame + frames] - running[:frames]
    rms = np.sqrt(np.maximum(frame_energy, 0) / (hop * blocks_per_frame))
    db = 20 * np.log10(np.maximum(rms, 1e-5) / max(rms.max(), 1e-5))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, y.size
    start, end = int(loud[0]) * hop, min(y.size, (int(loud[-1]) + 1) * hop)
    return (start, end) if end > start else (0, y.size)


def peak_normalise(y: np.ndarray, *, peak: float = 0.95) -> np.ndarray:
    """Scale so that the largest absolute sample equals `peak`."""
    if not 0 < peak <= 1:
        raise ConfigError(f"peak={peak} must be in (0, 1]")
    top = float(np.max(np.abs(y)))
    return y if top == 0 else (y * (peak / top)).astype(np.float32)


def fix_duration(y: np.ndarray, *, sr: int, duration: float, align: str = "center") -> np.ndarray:
    """Crop or zero-pad to exactly `duration` seconds, keeping the `align` part of the signal."""
    if duration <= 0:
        raise ConfigError(f"duration={duration} must be positive")
    if align not in ("center", "start"):
        raise ConfigError(f"align={align!r} must be 'center' or 'start'")
    target = int(round(duration * sr))
    excess = y.size - target
    if excess > 0:
        start = excess // 2 if align == "center" else 0
        return y[start:start + target]
    before = -excess // 2 if align == "center" else 0
    return np.pad(y, (before, -excess - before))


def audio_digest(y: np.ndarray) -> str:
    """A fingerprint of decoded audio: the same recording under another name or container matches."""
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(y, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def audio_problems(y: np.ndarray, audio: AudioConfig, quality: QualityConfig) -> list[str]:
    """What is wrong with a recording's speech (after trimming silence as `audio` says): too short,
    near-silent, or mostly a DC offset; empty when it passes every check of `quality`."""
    start, end = silence_bounds(y, top_db=audio.trim_top_db) if audio.trim else (0, y.size)
    speech = y[start:end].astype(np.float64)
    seconds, mean = speech.size / audio.sample_rate, float(speech.mean())
    rms = float(np.sqrt(np.mean(speech ** 2)))
    problems = []
    if seconds < quality.min_seconds:
        problems.append(f"only {seconds:.2f} s of sound (quality.min_seconds={quality.min_seconds:g})")
    level = 20 * np.log10(max(float(np.sqrt(np.mean((speech - mean) ** 2))), 1e-12))
    if level < quality.silence_db:
        problems.append(f"near-silent: {level:.0f} dBFS (quality.silence_db={quality.silence_db:g})")
    if rms > 0 and abs(mean) / rms > quality.max_dc:
        problems.append(f"mostly a DC offset: mean {mean:+.3f} is {abs(mean) / rms:.2f} of the RMS "
                        f"(quality.max_dc={quality.max_dc:g})")
    return problems


@dataclasses.dataclass(frozen=True)
class Window:
    """One fixed-length stretch of a conditioned recording, as a model sees it.

    `start` and `end` are seconds in the source's own clock (before trimming), and cover only real
    audio: a short recording's window ends where the recording does, not where its padding does.
    """

    start: float
    end: float
    samples: np.ndarray
    audio: tuple[int, int] | None = None  # sample range of real audio in `samples` (None: all of it)


def audio_windows(y: np.ndarray, config: AudioConfig, *,
                  augment: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Window]:
    """The one preprocessing path: trim, normalise, (augment), then cut into windows.

    Images, training, evaluation and prediction all read recordings through this function, so a
    file is seen the same way everywhere. A recording no longer than ``config.duration`` gives one
    window, zero-padded as ``config.align`` says; a longer one gives windows of that length every
    ``config.window_hop`` seconds, the last ending at the recording's end, so nothing is left unscored.
    With ``duration=None`` the whole recording is one window.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono signal at ``config.sample_rate`` (see `to_mono`).
    augment : callable, optional
        Training copies only: changes the trimmed, normalised speech before it is windowed.
    """
    sr = config.sample_rate
    start, end = silence_bounds(y, top_db=config.trim_top_db) if config.trim else (0, y.size)
    y, offset = y[start:end], start / sr
    if config.normalise:
        y = peak_normalise(y, peak=config.peak)
    if augment is not None:
        y = augment(y)
        if y.size == 0:
            raise DataError("augmentation left no samples")
    if config.duration is None:
        return [Window(offset, offset + y.size / sr, y)]
    size = int(round(config.duration * sr))
    if y.size <= size:
        before = (size - y.size) // 2 if config.align == "center" else 0
        return [Window(offset, offset + y.size / sr, fix_duration(y, sr=sr, duration=config.duration,
                                                                  align=config.align), (before, before + y.size))]
    starts = window_starts(y.size, size=size, step=max(1, int(round(config.window_hop * sr))))
    return [Window(offset + s / sr, offset + (s + size) / sr, y[s:s + size]) for s in starts]


def window_starts(n: int, *, size: int, step: int) -> list[int]:
    """Sample offsets of windows of `size` every `step` samples over `n` samples; the last window
    ends at `n`, so no sample is left out (an n shorter than `size` gives one window at 0)."""
    if size <= 0 or step <= 0:
        raise ConfigError(f"size={size} and step={step} must be positive")
    starts = list(range(0, max(n - size, 0) + 1, step))
    if starts[-1] < n - size:
        starts.append(n - size)
    return starts


def prepare_windows(path, config: AudioConfig, *,
                    augment: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Window]:
    """Load a recording and cut it into the windows every spectro stage reads."""
    return audio_windows(load_audio(path, sr=config.sample_rate), config, augment=augment)
