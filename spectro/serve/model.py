"""What the server scores with: the loaded model (one checkpoint, or an ensemble's members), the micro-batcher in
front of it, and the thread pool that turns uploads into windows and pictures off the event loop.

An upload goes the way `Predictor.predict` takes a file: decoded at its own rate (in memory), mono at the
model's rate, trimmed and cut into the same windows, normalised with the same statistics, drawn as the same
pictures and scored by the same graph (``Predictor.score_inputs``), so the answer is `Predictor`'s. Only the
batching differs: a forward pass holds the windows of every request that is ready, not of one.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from ..audio import audio_problems, audio_windows, decode_audio, to_mono
from ..errors import DataError
from ..image_tree import encode_png
from ..inference import EnsemblePredictor, Prediction, Predictor, recording_prediction
from ..predict import prediction_record
from .batcher import MicroBatcher

log = logging.getLogger(__name__)

PICTURE_WINDOWS = 8  # the strip of pictures an answer with ?picture=1 carries: its first windows'


class UndecodableAudio(DataError):
    """No decoder could read the upload: HTTP 415, with each decoder's reason."""


@dataclasses.dataclass(frozen=True)
class Upload:
    """One recording as a client sent it. `name` is the client's file name, shown in messages and answers
    only: the server never opens a path a client names."""

    data: bytes
    name: str | None = None

    @property
    def source(self) -> str:
        return repr(self.name) if self.name else "the upload"

    @property
    def suffix(self) -> str:
        """The name's suffix, if it is a plain one (".m4a"): a hint for the fallback decoder, nothing more."""
        suffix = os.path.splitext(self.name or "")[1].lower()
        return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


@dataclasses.dataclass
class _Member:
    """One model's view of an upload: its windows and their normalisation statistics."""

    windows: list
    statistics: dict


class ServedModel:
    """A `Predictor` or `EnsemblePredictor` behind a micro-batcher.

    Parameters
    ----------
    max_windows, max_wait, max_requests :
        The batcher's (``spectro.serve.batcher.MicroBatcher``).
    workers : int
        Threads for decoding and pictures (default: one per core).
    """

    def __init__(self, predictor: Predictor | EnsemblePredictor, *, max_windows: int = 32, max_wait: float = 0.005,
                 max_requests: int = 64, workers: int | None = None):
        ensemble = isinstance(predictor, EnsemblePredictor)
        self.predictor = predictor
        self.members: list[Predictor] = list(predictor.predictors) if ensemble else [predictor]
        self.classes = predictor.classes
        self.batcher = MicroBatcher(lambda member, inputs: self.members[member].score_inputs(inputs),
                                    max_windows=max_windows, max_wait=max_wait, max_requests=max_requests)
        self.workers = workers or os.cpu_count() or 1
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.ready = False

    def start(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="spectro-features")
        self.batcher.start()

    def stop(self) -> None:
        self.ready = False
        self.batcher.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    async def warm_up(self) -> None:
        """Score generated recordings of 1, 2, 4, ... windows (up to `max_windows`) through the whole path, then
        report ready. The first pass of a model is slow (lazy initialisation), and each pass size sets buffers that
        oneDNN and the allocator keep: once every size the batcher uses has run, memory stays level."""
        import io

        import soundfile

        audio = self.members[0].audio
        for windows in (1 << bit for bit in range(self.batcher.max_windows.bit_length())):  # every pass size
            seconds = audio.duration + audio.window_hop * (windows - 1) if audio.duration else 1.0
            t = np.arange(int(seconds * audio.sample_rate)) / audio.sample_rate
            wav = io.BytesIO()
            soundfile.write(wav, 0.25 * np.sin(2 * np.pi * 220 * t) * (1.5 + np.sin(2 * np.pi * 3 * t)),
                            audio.sample_rate, format="WAV")
            await self.predict(Upload(wav.getvalue(), "warm-up.wav"), picture=True)
        self.ready = True

    async def predict(self, upload: Upload, *, picture: bool = False) -> dict:
        """The answer for one upload: `spectro predict --json --segments`'s record, `top_k`, and with
        `picture` the pictures the (first) model saw as a PNG data URL.

        Raises
        ------
        UndecodableAudio
            No decoder reads the bytes.
        DataError
            The audio decodes but cannot be used: empty, silent, too short, non-finite.
        """
        loop = asyncio.get_running_loop()
        views = await loop.run_in_executor(self.pool, self._views, upload)
        scored = await asyncio.gather(*(self._score(i, view) for i, view in enumerate(views)))
        predictions = [prediction for prediction, _ in scored]
        prediction = predictions[0] if len(predictions) == 1 else self.predictor.combine(predictions)
        record = answer(prediction)
        if picture:
            record["picture"] = await loop.run_in_executor(self.pool, picture_strip, scored[0][1])
        return record

    def _views(self, upload: Upload) -> list[_Member]:
        """Decode once; each member's windows and statistics (members may read different rates and windows)."""
        try:
            samples, rate = decode_audio(upload.data, source=upload.source, suffix=upload.suffix)
        except DataError as error:
            raise UndecodableAudio(str(error)) from None
        mono: dict[int, np.ndarray] = {}
        views = []
        for member in self.members:
            audio = member.audio
            if audio.sample_rate not in mono:
                mono[audio.sample_rate] = to_mono(samples, orig_sr=rate, sr=audio.sample_rate, source=upload.source)
                check_quality(mono[audio.sample_rate], member, upload.source)
            windows = audio_windows(mono[audio.sample_rate], audio)
            views.append(_Member(windows, member.statistics(windows)))
        return views

    async def _score(self, index: int, view: _Member) -> tuple[Prediction, list[np.ndarray]]:
        """One member's Prediction of an upload, its windows scored `max_windows` at a time through the batcher
        (a long recording never holds more pictures than that); and its first pictures, for `picture_strip`."""
        member, loop, size = self.members[index], asyncio.get_running_loop(), self.batcher.max_windows
        first_input = next(iter(member.inputs))
        probabilities = np.empty((len(view.windows), len(member.classes)), np.float32)
        pictures: list[np.ndarray] = []
        for start in range(0, len(view.windows), size):
            chunk = view.windows[start:start + size]
            inputs = await loop.run_in_executor(self.pool, lambda c=chunk: [member.window_inputs(w, view.statistics)
                                                                            for w in c])
            pictures += [arrays[first_input] for arrays in inputs[:PICTURE_WINDOWS - len(pictures)]]
            # A recording's windows share one length (see spectro.audio.audio_windows), so a job has one shape.
            probabilities[start:start + len(chunk)] = await asyncio.wrap_future(self.batcher.submit(index, inputs))
        return recording_prediction(None, view.windows, probabilities, member.classes), pictures


def check_quality(y: np.ndarray, member: Predictor, source: str) -> None:
    """Refuse what `spectro images --set quality.action=reject` refuses (speech too short, near-silent, mostly a
    DC offset, by the checkpoint's own `quality` settings): a label for it would mean nothing."""
    quality = next(iter(member.inputs.values())).quality
    problems = audio_problems(y, member.audio, quality)
    if problems:
        raise DataError(f"cannot use {source}: {'; '.join(problems)}")


def answer(prediction: Prediction) -> dict:
    """`spectro predict --json --segments`'s record of a prediction, plus `top_k`: every class as
    ``{"label", "score"}``, most probable first, as Hugging Face's audio-classification pipeline answers."""
    record = prediction_record(prediction, windows=True)
    record["top_k"] = [{"label": label, "score": score} for label, score in
                       sorted(record["probabilities"].items(), key=lambda item: -item[1])]
    return record


def picture_strip(pictures: Sequence[np.ndarray]) -> str:
    """The windows' pictures side by side, as the model saw them, as a PNG data URL. A picture is a uint8
    (3, H, W) image; a matrix feature (MFCC, frames) is shown in grey, scaled to its range, low rows at the
    bottom."""
    shown = []
    for array in pictures:
        if array.dtype != np.uint8:
            values = np.flipud(array.astype(np.float32))
            span = float(values.max() - values.min()) or 1.0
            array = np.repeat(((values - values.min()) / span * 255).astype(np.uint8)[None], 3, axis=0)
        shown.append(array)
    gap = np.full((3, shown[0].shape[1], 2), 255, np.uint8)
    strip = np.concatenate([part for array in shown for part in (array, gap)][:-1], axis=2)
    return "data:image/png;base64," + base64.b64encode(encode_png(strip)).decode("ascii")
