#!/usr/bin/env python
"""The training data path at scale: what the loader costs, and the memory a large tree needs.

1. Loader cost: the same EfficientNet-Lite0 training steps (CPU) twice, on batches already in memory
   and through the streaming loader (packed tree, DataLoader workers), alternating; it prints images/s
   of both and the loader's share of a step.
2. Memory: a whole epoch, then validation, of a tiny model on the generated tree in a process of its
   own; it prints that process's peak resident memory beside what decoding every picture into memory
   (as the trainer once did) would take for the pictures alone.

The tree (synthetic speech rendered by `spectro images`, one 224x224x3 picture per recording) is made
once under --work and reused by later runs.

    python scripts/bench_train.py --work /tmp/spectro-bench-train --images 30000
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

LANGUAGES = ("synth-a", "synth-b")
SPEAKERS = 40  # per language
PICTURE_BYTES = 3 * 224 * 224


def _generate(args: tuple[Path, str, int]) -> int:
    from spectro.synth import generate_corpus

    root, language, per_emotion = args
    return len(generate_corpus(root, languages=(language,), speakers_per_language=SPEAKERS,
                               utterances_per_emotion=per_emotion, seed=0))


def make_tree(work: Path, images: int) -> Path:
    """A tree of at least `images` pictures of synthetic speech (4 emotions, 80 speakers)."""
    from spectro.config import FeatureConfig
    from spectro.corpora import scan_corpus
    from spectro.images import build_image_dataset

    per_emotion = math.ceil(images / (len(LANGUAGES) * SPEAKERS * 4))
    if per_emotion > 99:
        raise SystemExit(f"--images {images}: at most {len(LANGUAGES) * SPEAKERS * 4 * 99} with {SPEAKERS} speakers")
    started = time.perf_counter()
    with ProcessPoolExecutor(len(LANGUAGES)) as pool:
        count = sum(pool.map(_generate, [(work / "audio", language, per_emotion) for language in LANGUAGES]))
    tree = work / "tree"
    build_image_dataset(scan_corpus("synth", work / "audio").utterances, tree, FeatureConfig(), progress=True)
    print(f"tree: {count} recordings rendered into {tree} ({time.perf_counter() - started:.0f} s, nothing redone)")
    return tree


def experiment(tree: Path, work: Path, model: str, batch_size: int, workers: int) -> dict:
    return {"data": {"train": [str(tree)], "classes": 4, "val_fraction": 0.2},
            "model": {"name": model, "pretrained": False},
            "train": {"epochs": 1, "batch_size": batch_size, "freeze_epochs": 0, "workers": workers},
            "run": {"name": f"bench-{model}", "checkpoint_dir": str(work / "checkpoints"),
                    "log_dir": str(work / "runs")}}


def loader_cost(tree: Path, work: Path, *, steps: int, batch_size: int, workers: int, rounds: int) -> None:
    """Seconds for `steps` Lite0 steps on in-memory batches and on loader batches, alternating `rounds` times."""
    import torch

    from spectro.config import ExperimentConfig, from_dict
    from spectro.data import EpochSampler, window_loader
    from spectro.training import start_run
    from spectro.training.loop import train_step

    run = start_run(from_dict(ExperimentConfig, experiment(tree, work, "efficientnet_lite0", batch_size, workers)),
                    progress=False)
    train = run.splits.train
    sampler = EpochSampler(train.n_windows, batch_size, seed=0, weights=run.weights)
    picked = sampler.batches[: steps + 1]  # the first one warms up
    sampler.batches = picked
    in_memory = [(w, *train.stored(w)) for w in picked]
    run.model.train()
    times = {"in memory": 0.0, "loader": 0.0}
    for _ in range(rounds):
        for name in times:
            batches = iter(in_memory if name == "in memory" else
                           window_loader(train, sampler, workers=workers, pin_memory=False))
            train_step(run, *next(batches), step=True)  # warm-up: first batch, allocator, loader start
            start = time.perf_counter()
            for windows, stored, lengths, labels in batches:
                train_step(run, windows, stored, lengths, labels, step=True)
            times[name] += time.perf_counter() - start
    start, seen = time.perf_counter(), 0
    for _, stored, _, _ in window_loader(train, EpochSampler(train.n_windows, batch_size, seed=1), workers=workers,
                                         pin_memory=False):
        seen += len(next(iter(stored.values())))
        if seen >= 50 * batch_size:
            break
    alone = seen / (time.perf_counter() - start)
    images = rounds * steps * batch_size
    rate = {name: images / seconds for name, seconds in times.items()}
    print(f"loader cost: EfficientNet-Lite0, batch {batch_size}, {torch.get_num_threads()} threads, {workers} loader "
          f"workers, {rounds} x {steps} steps")
    for name, seconds in times.items():
        print(f"  {name:<10} {rate[name]:7.1f} images/s  ({1000 * seconds / (rounds * steps):.0f} ms a step)")
    print(f"  loader overhead: {100 * (times['loader'] / times['in memory'] - 1):+.1f}% of a step (target <= 5%); "
          f"the loader alone reads {alone:.0f} images/s")


def _rss_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def peak_memory(tree: Path, work: Path, *, batch_size: int, workers: int) -> None:
    """Train the tiny model for an epoch in its own process, sampling its memory (and its workers')."""
    from spectro.data import ImageSet
    from spectro.image_tree import read_image_manifest

    config = experiment(tree, work, "tiny_efficientnet", batch_size, workers)
    path = work / "memory.yaml"
    path.write_text(yaml.safe_dump(config))
    rows = read_image_manifest(tree)
    windows = ImageSet([p for p, _ in rows], [u for _, u in rows], None, progress=False).n_windows
    command = [sys.executable, "-m", "spectro", "train", str(path), "--quiet", "--run-name", f"memory-{time.time_ns()}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peak = tree_peak = 0
    started = time.perf_counter()
    while process.poll() is None:
        peak = max(peak, _rss_kb(process.pid, "VmHWM"))
        tree_peak = max(tree_peak, _rss_kb(process.pid,
                                           "VmRSS") + sum(_rss_kb(c, "VmRSS") for c in _children(process.pid)))
        time.sleep(0.1)
    if process.returncode:
        raise SystemExit(f"the training run failed ({process.returncode}): {' '.join(command)}")
    gb = 1024 ** 2
    print(f"memory: one epoch and validation of tiny_efficientnet on {windows} pictures, batch {batch_size}, "
          f"{workers} loader workers ({time.perf_counter() - started:.0f} s)")
    print(f"  peak resident memory of the training process: {peak / gb:.2f} GB (target <= 2.5 GB); with its "
          f"loader workers (shared pages counted in each): {tree_peak / gb:.2f} GB")
    print(f"  every picture decoded into memory, as the trainer once did: {windows * PICTURE_BYTES / 1024 ** 3:.2f} GB "
          "for the pictures alone")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="where the generated tree and runs are kept")
    parser.add_argument("--images", type=int, default=30000, help="pictures in the generated tree")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="Lite0 steps per round and path")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two paths")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    args = parser.parse_args()

    tree = make_tree(args.work, args.images)
    loader_cost(tree, args.work, steps=args.steps, batch_size=args.batch_size, workers=args.workers,
                rounds=args.rounds)
    peak_memory(tree, args.work, batch_size=args.batch_size, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
