"""`spectro listen`: emotion from a microphone, live, through the same `Predictor` as `spectro predict`.

Rolling mode scores the last window of audio every hop and prints the emotion with its
confidence; ``seconds`` mode records, then scores the recording as `spectro predict` scores a
file. Audio comes from `sounddevice` (PortAudio), an optional extra; any object with
``sample_rate`` and ``read()`` (the next block of mono float32 samples, or None at the end) can
stand in for the microphone, which is how the tests drive it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ConfigError, DataError
from .inference import Prediction, Predictor


class AudioSource(Protocol):
    sample_rate: int

    def read(self) -> np.ndarray | None:
        """The next block of mono float32 samples; None when the stream has ended."""


@dataclasses.dataclass
class Reading:
    """One hop of rolling mode: the window that ended `time` seconds after listening began."""

    time: float
    level_db: float  # RMS of the window, dB below full scale
    prediction: Prediction | None  # None when the window was quieter than the gate


def _sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise ConfigError("spectro listen needs sounddevice: pip install 'spectro-ser[listen]' (or, in a checkout of "
                          "spectro, pip install -e '.[listen]')") from None
    except OSError as error:  # the PortAudio library is missing
        raise ConfigError(f"sounddevice cannot load PortAudio ({error}); install it, e.g. "
                          "`apt install libportaudio2`") from None
    return sounddevice


def input_devices() -> list[str]:
    """Lines naming each audio input device: index, name, channels and default rate."""
    sd = _sounddevice()
    return [f"{i}: {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)"
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


class Microphone:
    """An audio input device as an `AudioSource`, at its own default sample rate, mono."""

    def __init__(self, device: int | str | None = None, *, block_seconds: float = 0.05):
        sd = _sounddevice()
        try:
            info = sd.query_devices(device, kind="input")
        except (sd.PortAudioError, ValueError) as error:
            named = "" if device is None else f" {device!r}"
            raise DataError(f"no audio input device{named} ({error}); connect a microphone, or pick one of "
                            "`spectro listen --list-inputs` with --input") from None
        self.sample_rate = int(info["default_samplerate"])
        self._blocks: queue.Queue[np.ndarray] = queue.Queue()
        self._stream = sd.InputStream(device=device, channels=1, samplerate=self.sample_rate, dtype="float32",
                                      blocksize=int(block_seconds * self.sample_rate),
                                      callback=lambda data, frames, time, status: self._blocks.put(data[:, 0].copy()))

    def __enter__(self) -> Microphone:
        self._stream.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stream.stop()
        self._stream.close()

    def read(self) -> np.ndarray:
        return self._blocks.get()


def level_db(samples: np.ndarray) -> float:
    """RMS level in dB below full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def rolling(predictor: Predictor, source: AudioSource, *, hop: float, window: float, gate_db: float,
            recorder: Recorder | None = None) -> Iterator[Reading]:
    """Score the last `window` seconds every `hop` seconds until the source ends."""
    if not 0 < hop <= window:
        raise ConfigError(f"hop={hop} must be in (0, window={window}]")
    sr = source.sample_rate
    kept, since, heard = np.zeros(0, np.float32), 0, 0
    while (block := source.read()) is not None:
        if recorder is not None:
            recorder.write(block)
        kept = np.concatenate([kept, block])[-int(window * sr):]
        since, heard = since + block.size, heard + block.size
        if since >= hop * sr:
            since = 0
            level = level_db(kept)
            yield Reading(heard / sr, level, predictor.predict(kept, sr) if level >= gate_db else None)


def record(source: AudioSource, *, seconds: float, recorder: Recorder | None = None) -> np.ndarray:
    """`seconds` of audio from the source (less if it ends first)."""
    blocks, wanted = [], int(seconds * source.sample_rate)
    while sum(b.size for b in blocks) < wanted and (block := source.read()) is not None:
        blocks.append(block)
        if recorder is not None:
            recorder.write(block)
    samples = np.concatenate(blocks)[:wanted] if blocks else np.zeros(0, np.float32)
    if not samples.size:
        raise DataError("the audio input delivered no samples")
    return samples


class Recorder:
    """Streams what was heard to a WAV file, renamed into place when closed (never a torn file)."""

    def __init__(self, path: str | os.PathLike, sample_rate: int):
        import soundfile

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file = soundfile.SoundFile(self._tmp, "w", samplerate=sample_rate, channels=1, format="WAV",
                                         subtype="PCM_16")

    def write(self, block: np.ndarray) -> None:
        self._file.write(block)

    def close(self) -> None:
        self._file.close()
        os.replace(self._tmp, self.path)


def plot_readings(readings: list[Reading], classes: tuple[str, ...], path: str | os.PathLike) -> None:
    """Each class's probability over time (quiet windows left blank), written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_open

    times = [r.time for r in readings]
    fig, ax = plt.subplots(figsize=(8, 3))
    for c in classes:
        ax.plot(times, [r.prediction.probabilities[c] if r.prediction else np.nan for r in readings], label=c)
    ax.set_xlabel("seconds")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8, ncols=len(classes))
    fig.tight_layout()
    with atomic_open(path, "wb", durable=False) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def optional_recorder(path: str | os.PathLike | None, sample_rate: int) -> Iterator[Recorder | None]:
    """A Recorder for `path` (None: nothing kept), closed into place even after Ctrl-C."""
    recorder = Recorder(path, sample_rate) if path else None
    try:
        yield recorder
    finally:
        if recorder is not None:
            recorder.close()
