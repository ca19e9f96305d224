#!/usr/bin/env python
"""GPU figures in one table: training throughput with and without the loader, Predictor latency, memory.

Run by ``scripts/gpu_check.sh`` on a machine with a CUDA GPU (random weights: the time does not
depend on them). For ResNet-50 and EfficientNet-Lite0, AMP (fp16) and channels_last at batch 128:
training images/s on batches already on the device and through spectro's loader (a packed tree of
generated pictures, `train.workers` processes), alternating; peak GPU memory of those steps; and
`Predictor.predict` latency of one 3 s clip on CUDA (median). With two or more GPUs, a 2-process
torchrun epoch on the same tree, beside one process.

    python scripts/bench_gpu.py --work /tmp/spectro-gpu [--pictures 4096] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

MODELS = ("resnet50", "efficientnet_lite0")


def make_tree(root: Path, pictures: int) -> Path:
    """A packed tree of `pictures` random 224x224 pictures of 40 speakers and 4 emotions (the pixels do not
    change the time), written straight into the store as `spectro images --format packed` writes it."""
    from spectro.config import FeatureConfig, to_dict
    from spectro.corpora import Utterance
    from spectro.image_tree import (
        SETTINGS_FILE,
        TREE_FORMAT,
        Recording,
        recording_key,
        window_file,
        write_tree_manifest,
    )
    from spectro.packed import PACKED_DIR, PARTS_DIR, write_all, write_rendered_index

    tree = root / "tree"
    if (tree / PACKED_DIR / "meta.json").is_file():
        return tree
    (tree / PACKED_DIR / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    (tree / SETTINGS_FILE).write_text(json.dumps({"features": to_dict(FeatureConfig()), "augmentation": None,
                                                  "storage": "packed", "tree_format": TREE_FORMAT}))
    emotions = ("neutral", "happy", "sad", "angry")
    recordings = []
    for i in range(pictures):
        utt = Utterance(f"/generated/{i}.wav", "synth", f"synth-s{i % 40:02d}", emotions[i % 4], "synth-a",
                        ("female", "male")[i % 2])
        key = recording_key(utt)
        recordings.append((Recording(key, utt, f"{i:032x}", [(window_file(key, 0, True), 0.0, 3.0)]), "all", i))
    rng = np.random.default_rng(0)
    fd = os.open(tree / PACKED_DIR / PARTS_DIR / "all", os.O_WRONLY | os.O_CREAT, 0o644)
    for start in range(0, pictures, 256):
        block = rng.integers(0, 256, (min(256, pictures - start), 3, 224, 224), dtype=np.uint8)
        write_all(fd, block, start * block[0].nbytes)
    os.close(fd)
    write_tree_manifest(tree, [r for r, _, _ in recordings])
    write_rendered_index(tree, recordings, (3, 224, 224))
    return tree


def experiment(tree: Path, work: Path, model: str, name: str) -> dict:
    return {"data": {"train": [str(tree)], "classes": 4, "val_fraction": 0.1},
            "model": {"name": model, "pretrained": False},
            "train": {"epochs": 1, "batch_size": 128, "freeze_epochs": 0, "workers": 8, "precision": "fp16",
                      "channels_last": True, "device": "cuda"},
            "run": {"name": name, "checkpoint_dir": str(work / "checkpoints"), "log_dir": str(work / "runs")}}


def training_rates(tree: Path, work: Path, model: str, steps: int) -> dict:
    """Images/s of `steps` training steps on device-resident batches and through the loader, and peak memory."""
    from spectro.config import ExperimentConfig, from_dict
    from spectro.data import EpochSampler, window_loader
    from spectro.training import start_run
    from spectro.training.loop import train_step

    run = start_run(from_dict(ExperimentConfig, experiment(tree, work, model, f"rates-{model}")), progress=False)
    train = run.splits.train
    sampler = EpochSampler(train.n_windows, 128, seed=0, weights=run.weights)
    sampler.batches = sampler.batches[: steps + 1]
    on_device = []
    for windows in sampler.batches:
        stored, lengths, labels = train.stored(windows)
        on_device.append((windows, {k: v.cuda() for k, v in stored.items()}, lengths, labels.cuda()))
    run.model.train()
    torch.cuda.reset_peak_memory_stats()
    seconds = {"on device": 0.0, "loader": 0.0}
    for _ in range(2):
        for name in seconds:
            batches = iter(on_device if name == "on device" else
                           window_loader(train, sampler, workers=8, pin_memory=True))
            train_step(run, *next(batches), step=True)  # warm-up: cuDNN's choice, the loader's start
            torch.cuda.synchronize()
            start = time.perf_counter()
            for batch in batches:
                train_step(run, *batch, step=True)
            torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - start
    images = 2 * steps * 128
    return {"on device": images / seconds["on device"], "loader": images / seconds["loader"],
            "peak GB": torch.cuda.max_memory_allocated() / 1e9}


def predictor_ms(model: str, work: Path, repeats: int = 30) -> float:
    """Median ms of `Predictor.predict` on a 3 s clip on CUDA (features on the CPU, the model on the GPU)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_predict import clip, save_untrained_checkpoint

    from spectro import Predictor

    checkpoint = work / f"{model}.pt"
    save_untrained_checkpoint(model, checkpoint)
    predictor = Predictor.load(checkpoint, device="cuda")
    y = clip(None, 3.0)
    times = []
    for _ in range(repeats + 5):
        start = time.perf_counter()
        predictor.predict(y, 16000)
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times[5:])


def torchrun_epochs(tree: Path, work: Path) -> dict:
    """Seconds for one training epoch of ResNet-50 by one process and by two under torchrun."""
    result = {}
    for processes in (1, 2):
        name = f"epoch-{processes}gpu-{time.time_ns()}"
        config = work / f"{name}.yaml"
        config.write_text(yaml.safe_dump(experiment(tree, work, "resnet50", name)))
        command = [sys.executable, "-m", "spectro", "train", str(config), "--quiet"]
        if processes > 1:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                       "-m", "spectro", "train", str(config), "--quiet"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        result[processes] = time.perf_counter() - start
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="where the generated tree and checkpoints go")
    parser.add_argument("--pictures", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per measurement and round")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine; nothing to measure", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    tree = make_tree(args.work, args.pictures)
    card = torch.cuda.get_device_name(0)
    rows = []
    for model in MODELS:
        rates = training_rates(tree, args.work, model, args.steps)
        rows.append((model, rates["on device"], rates["loader"], rates["peak GB"], predictor_ms(model, args.work)))
        torch.cuda.empty_cache()
    print(f"\n{card}, torch {torch.__version__}, AMP fp16, channels_last, batch 128, {args.steps} x 2 steps")
    print(f"{'model':<20} {'train img/s (on device)':>24} {'train img/s (loader)':>21} {'loader cost':>12} "
          f"{'peak GPU GB':>12} {'Predictor 3 s clip ms':>22}")
    for model, device, loader, peak, latency in rows:
        print(f"{model:<20} {device:>24.0f} {loader:>21.0f} {100 * (device / loader - 1):>+11.1f}% {peak:>12.2f} "
              f"{latency:>22.1f}")
    if torch.cuda.device_count() >= 2:
        epochs = torchrun_epochs(tree, args.work)
        print(f"ResNet-50 epoch of {args.pictures} pictures: 1 GPU {epochs[1]:.1f} s, 2 GPUs (torchrun) "
              f"{epochs[2]:.1f} s, speed-up {epochs[1] / epochs[2]:.2f}x")
    else:
        print("one GPU: the 2-process torchrun row needs two")
    return 0


if __name__ == "__main__":
    sys.exit(main())
