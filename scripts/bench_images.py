#!/usr/bin/env python
"""Image-generation throughput: `spectro images` (PNG files, and straight into the packed store) against
the naive way, measured in one run.

The reference is how SER notebooks usually do it: one process, one file at a time, librosa for
the spectrogram and matplotlib's `specshow` + `savefig` for a 224x224 picture, with the same
analysis settings (25 ms frames every 10 ms, 128 mel bands) as spectro's defaults.

    python scripts/bench_images.py --corpus emodb=../shared/data/EMO-DB --reference-files 60
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile


def naive_reference(paths: list[str], out_dir: Path) -> float:
    """Seconds to render `paths` the notebook way."""
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def render(path: str, out: Path) -> None:
        # the same analysis as spectro's defaults, so both draw the same picture of the same spectrogram
        y, sr = librosa.load(path, sr=16000)
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=160, win_length=400, n_mels=128, fmin=20)
        S_db = librosa.power_to_db(S, ref=np.max, top_db=80)
        fig = plt.figure(figsize=(2.24, 2.24), dpi=100)
        librosa.display.specshow(S_db, sr=sr)
        plt.axis("off")
        fig.savefig(out, bbox_inches="tight", pad_inches=0)
        plt.close(fig)

    render(paths[0], out_dir / "warm-up.png")  # fonts and caches load once; do not count them
    start = time.perf_counter()
    for i, path in enumerate(paths):
        render(path, out_dir / f"{i}.png")
    return time.perf_counter() - start


def main() -> int:
    from spectro.cli import corpus_spec
    from spectro.config import FeatureConfig
    from spectro.images import build_image_dataset
    from spectro.manifest import scan_corpora

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", action="append", type=corpus_spec, required=True, metavar="NAME=PATH")
    parser.add_argument("--reference-files", type=int, default=60, help="files the slow reference renders")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    utterances = [u for scan in scan_corpora(args.corpus) for u in scan.utterances]
    audio_seconds = {u.path: soundfile.info(u.path).duration for u in utterances}
    sample = [u.path for u in utterances[:: max(1, len(utterances) // args.reference_files)]][: args.reference_files]

    with tempfile.TemporaryDirectory() as tmp:
        ref_time = naive_reference(sample, Path(tmp))
        times, results = {}, {}
        for storage in ("png", "packed"):
            start = time.perf_counter()
            results[storage] = build_image_dataset(utterances, Path(tmp) / storage, FeatureConfig(),
                                                   workers=args.workers, progress=False, storage=storage)
            times[storage] = time.perf_counter() - start
        start = time.perf_counter()
        build_image_dataset(utterances, Path(tmp) / "png", FeatureConfig(), workers=args.workers, progress=False)
        resume_time = time.perf_counter() - start

    ref_rate = len(sample) / ref_time
    print(f"{'method':<44} {'files':>6} {'seconds':>8} {'files/s':>8} {'x real time':>12} {'speed-up':>9}")
    print(f"{'reference (librosa + savefig, 1 proc)':<44} {len(sample):>6} {ref_time:>8.1f} {ref_rate:>8.1f} "
          f"{sum(audio_seconds[p] for p in sample) / ref_time:>12.0f} {1:>8.1f}x")
    for storage, seconds in times.items():
        rate = len(utterances) / seconds
        label = f"spectro images --format {storage} ({args.workers} workers)"
        print(f"{label:<44} {len(utterances):>6} {seconds:>8.1f} {rate:>8.1f} "
              f"{sum(audio_seconds.values()) / seconds:>12.0f} {rate / ref_rate:>8.1f}x")
    print(f"rejected: {len(results['png'].rejected)}   rerun (all present): {resume_time:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
