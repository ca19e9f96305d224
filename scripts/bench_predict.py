#!/usr/bin/env python
"""Prediction latency on this machine: one 3 s clip in process, model load, and `spectro predict` cold start.

For each model (EfficientNet-Lite0 and ResNet-18 by default; weights are random, which does not
change the time), it saves a checkpoint with the default feature settings, then measures:

- in-process latency of `Predictor.predict` on one 3 s clip, split into feature time (conditioning,
  windowing, log-mel picture) and model time (the forward pass), median over `--repeats`;
- model load time in a fresh process (imports included): building the model from the checkpoint,
  and reading its cached traced copy;
- `spectro predict CHECKPOINT clip` as a fresh process: the first use of a checkpoint (builds the
  model and caches the traced copy) and later cold starts (median of 3);
- peak memory (RSS) of `spectro predict` on a 10-minute recording against the 3 s clip.

    python scripts/bench_predict.py [--audio ../shared/data/EMO-DB/03a01Fa.flac] [--models efficientnet_lite0 resnet18]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile


def clip(audio: str | None, seconds: float, sr: int = 16000) -> np.ndarray:
    """`seconds` of speech: the given file tiled or cut to length, else a synthetic utterance."""
    if audio:
        from spectro.audio import load_audio

        y = load_audio(audio, sr=sr)
    else:
        from spectro.synth import generate_corpus

        with tempfile.TemporaryDirectory() as tmp:
            (path,) = generate_corpus(tmp, emotions=("happy",), languages=("synth-a",), speakers_per_language=1,
                                      utterances_per_emotion=1)
            y, _ = soundfile.read(path, dtype="float32")
    return np.resize(y, int(seconds * sr)).astype(np.float32)


def save_untrained_checkpoint(name: str, path: Path) -> None:
    from spectro.checkpoint_file import save_checkpoint
    from spectro.config import FeatureConfig, to_dict
    from spectro.models import create_model

    model = create_model(name, 4, pretrained=False)
    save_checkpoint({"model": model.state_dict(), "classes": ["neutral", "happy", "sad", "angry"], "model_name": name,
                     "config": {"run": {"name": f"bench_{name}"}}, "inputs": {"image": to_dict(FeatureConfig())}}, path)


def in_process(checkpoint: Path, y: np.ndarray, repeats: int) -> dict:
    import torch

    from spectro import Predictor
    from spectro.audio import audio_windows, to_mono
    from spectro.data import as_model_input
    from spectro.features import window_arrays

    built = Predictor.load(checkpoint, device="cpu", cache=False)
    predictor = Predictor.load(checkpoint, device="cpu")  # the traced copy, written on first use
    features = predictor.inputs["image"]
    feature_ms, model_ms, total_ms = [], [], []
    for _ in range(repeats + 3):  # three warm-up rounds
        t0 = time.perf_counter()
        arrays = window_arrays(audio_windows(to_mono(y, orig_sr=16000, sr=16000), features.audio), features)
        t1 = time.perf_counter()
        with torch.no_grad():
            predictor.graph(as_model_input(torch.from_numpy(arrays)))
        t2 = time.perf_counter()
        predictor.predict(y, 16000)
        t3 = time.perf_counter()
        feature_ms.append(1000 * (t1 - t0))
        model_ms.append(1000 * (t2 - t1))
        total_ms.append(1000 * (t3 - t2))
    median = lambda values: statistics.median(values[3:])  # noqa: E731
    eager_ms = []
    for _ in range(repeats + 3):
        t0 = time.perf_counter()
        built.predict(y, 16000)
        eager_ms.append(1000 * (time.perf_counter() - t0))
    return {"feature_ms": median(feature_ms), "model_ms": median(model_ms), "predict_ms": median(total_ms),
            "predict_built_ms": median(eager_ms)}


def load_seconds(checkpoint: Path, cache: Path, *, use_cache: bool) -> float:
    """Seconds from a fresh interpreter to a ready Predictor (imports included), median of 3."""
    script = ("import sys, time; start = time.perf_counter(); from spectro import Predictor; "
              f"Predictor.load(sys.argv[1], device='cpu', cache={use_cache}); print(time.perf_counter() - start)")
    runs = [float(subprocess.run([sys.executable, "-c", script, str(checkpoint)], check=True, capture_output=True,
                                 text=True, env={**os.environ, "SPECTRO_CACHE_DIR": str(cache)}).stdout)
            for _ in range(3)]
    return statistics.median(runs)


def cold_starts(checkpoint: Path, wav: Path, cache: Path) -> tuple[float, float]:
    """Seconds for `spectro predict` as a new process: first use of the checkpoint, then the median of 3."""
    env = {**os.environ, "SPECTRO_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "spectro", "predict", str(checkpoint), str(wav)]

    def once() -> float:
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    first = once()
    return first, statistics.median(once() for _ in range(3))


def peak_rss_mb(checkpoint: Path, wav: Path, cache: Path) -> float:
    """Peak RSS of `spectro predict`, from getrusage in a small launcher (a child forked from this benchmark
    would also count the benchmark's own memory)."""
    launcher = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.executable, [sys.executable, "
                "*sys.argv[1:]])\n"
                "_, status, usage = os.wait4(pid, 0)\nprint('PEAK_KB', usage.ru_maxrss, file=sys.stderr)\n"
                "sys.exit(os.waitstatus_to_exitcode(status))")
    done = subprocess.run([sys.executable, "-c", launcher, "-m", "spectro", "predict", str(checkpoint), str(wav)],
                          capture_output=True, text=True, env={**os.environ, "SPECTRO_CACHE_DIR": str(cache)})
    if done.returncode:
        raise SystemExit(f"spectro predict {wav} failed: {done.stderr}")
    return int(done.stderr.split("PEAK_KB")[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", help="speech to cut the clips from (default: a synthetic utterance)")
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch

    print(f"CPU threads: {torch.get_num_threads()}, torch {torch.__version__}; targets: in-process predict of a 3 s "
          "clip "
          f"<= 50 ms, cold start <= 2.5 s, 10-minute RSS <= 1.3x of 3 s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        y = clip(args.audio, 3.0)
        soundfile.write(tmp / "clip.wav", y, 16000)
        soundfile.write(tmp / "ten_minutes.wav", clip(args.audio, 600.0), 16000)
        for name in args.models:
            checkpoint = tmp / f"{name}.pt"
            save_untrained_checkpoint(name, checkpoint)
            first, later = cold_starts(checkpoint, tmp / "clip.wav", tmp / f"cache_{name}")
            built_s, cached_s = (load_seconds(checkpoint, tmp / f"cache_{name}", use_cache=c) for c in (False, True))
            r = in_process(checkpoint, y, args.repeats)
            short, long = (peak_rss_mb(checkpoint, tmp / w, tmp / f"cache_{name}") for w in ("clip.wav",
                                                                                             "ten_minutes.wav"))
            print(f"{name}: predict 3 s clip {r['predict_ms']:.1f} ms median (features {r['feature_ms']:.1f} ms + "
                  f"model {r['model_ms']:.1f} ms; built model {r['predict_built_ms']:.1f} ms) -> "
                  f"{r['predict_ms'] / 50:.2f}x of the 50 ms target", flush=True)
            print(f"  model load in a fresh process, imports included: building it {built_s:.2f} s, from its cached "
                  f"traced copy {cached_s:.2f} s; "
                  f"`spectro predict` cold start: first use {first:.2f} s, then {later:.2f} s "
                  f"({later / 2.5:.2f}x of the 2.5 s target)", flush=True)
            print(f"  peak RSS: 3 s clip {short:.0f} MB, 10-minute recording {long:.0f} MB ({long / short:.2f}x)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
