#!/usr/bin/env python
"""Fault drill: interruptions and bad input on small generated data, one line per drill.

Every drill runs the real `spectro` command in its own process (as a user would), provokes a
fault, and checks the outcome: a clear error and a non-zero exit where the input or the machine is
at fault, nothing finished lost, and a rerun (or --resume) that ends exactly where an
uninterrupted run ends.

    python scripts/drill.py [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml

SPECTRO = [sys.executable, "-m", "spectro"]
SMALL = ["--set", "image.size=32", "--workers", "1", "--quiet"]


def run(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*SPECTRO, *map(str, args)], capture_output=True, text=True, env=env, **kwargs)


def tree_bytes(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.suffix in (".png", ".npy")}


def train_config(work: Path, name: str, tree: Path, epochs: int = 4) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"train": [str(tree)], "classes": 4, "val_speakers": ["synth-a02m"]},
        "model": {"name": "tiny_efficientnet", "pretrained": False},
        "train": {"epochs": epochs, "batch_size": 2},
        "run": {"name": name, "checkpoint_dir": str(work / "ck"), "log_dir": str(work / "runs")}}))
    return path


def summary(work: Path, name: str) -> dict:
    return json.loads((work / "ck" / name / "summary.json").read_text())


# --------------------------------------------------------------------------- interruption drills
def drill_images_killed(work: Path, corpus: Path) -> tuple[bool, str]:
    whole, killed = work / "images_whole", work / "images_killed"
    run("images", "--corpus", f"synth={corpus}", "--out", whole, *SMALL, check=True)
    process = subprocess.Popen([*SPECTRO, "images", "--corpus", f"synth={corpus}", "--out", str(killed), *SMALL],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(killed.rglob("*.png"))) < 60 and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(killed.rglob("*.png")))
    again = run("images", "--corpus", f"synth={corpus}", "--out", killed, *SMALL)
    same = again.returncode == 0 and tree_bytes(killed) == tree_bytes(whole)
    return same, f"killed after {done} images; the rerun finished a tree identical to an uninterrupted one"


def drill_training_interrupted(work: Path, tree: Path, number: int) -> tuple[bool, str]:
    name = f"stop_{signal.Signals(number).name.lower()}"
    reference = "reference"
    if not (work / "ck" / reference / "summary.json").is_file():
        run("train", train_config(work, reference, tree), "--quiet", check=True)
    config = train_config(work, name, tree)
    process = subprocess.Popen([*SPECTRO, "train", str(config), "--quiet"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    while not (work / "ck" / name / "last.pt").exists() and process.poll() is None:
        time.sleep(0.005)
    time.sleep(0.1)  # inside the second epoch: somewhere in one of its 16 batches
    process.send_signal(number)
    _, error = process.communicate()
    saved = torch.load(work / "ck" / name / "last.pt", weights_only=True)
    resumed = run("train", config, "--quiet", "--resume")
    same = resumed.returncode == 0 and summary(work, name)["test"] == summary(work, reference)["test"] and \
        summary(work, name)["validation"] == summary(work, reference)["validation"]
    where = f"epoch {saved['epoch']}, batch {saved['batch']}"
    return same, f"exit {process.returncode}, saved at {where}; --resume ended with the uninterrupted run's metrics"


def drill_concurrent_jobs(work: Path, corpus: Path, tree: Path) -> tuple[bool, str]:
    out = work / "images_twice"
    first = subprocess.Popen([*SPECTRO, "images", "--corpus", f"synth={corpus}", "--out", str(out), *SMALL],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list(out.rglob("*.png")) and first.poll() is None:
        time.sleep(0.005)
    second = run("images", "--corpus", f"synth={corpus}", "--out", out, *SMALL)
    first.wait()
    config = train_config(work, "twice", tree, epochs=3)
    training = subprocess.Popen([*SPECTRO, "train", str(config), "--quiet"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    while not (work / "ck" / "twice" / ".lock").exists() and training.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)
    other = run("train", config, "--quiet")
    training.wait()
    ok = (second.returncode == 2 and "in use by spectro images" in second.stderr and other.returncode == 2
          and "in use by spectro train" in other.stderr and len(list(out.rglob("*.png"))) == 128)
    return ok, "a second images job and a second training of one run were refused, naming the holder; the first finished"


# --------------------------------------------------------------------------- bad input and environment
def drill_bad_audio(work: Path) -> tuple[bool, str]:
    folder = work / "bad" / "happy" / "spk"
    folder.mkdir(parents=True)
    t = np.arange(16000) / 16000
    soundfile.write(folder / "fine.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    soundfile.write(folder / "vorbis.ogg", (0.3 * np.sin(2 * np.pi * 210 * t)).astype(np.float32), 16000, format="OGG")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio")
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(folder / "silent.wav", np.zeros(16000, np.float32), 16000)
    soundfile.write(folder / "clip.wav", (0.3 * np.sin(2 * np.pi * 200 * t[:800])).astype(np.float32), 16000)
    (folder / "song.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    done = run("images", "--corpus", f"folder={work / 'bad'}", "--out", work / "bad_tree", *SMALL)
    with open(work / "bad_tree" / "rejected.csv", newline="") as handle:
        reasons = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    ok = (done.returncode == 0 and "2 image(s) written" not in done.stdout and set(reasons) == {
        "corrupt.wav", "empty.wav", "silent.wav", "song.m4a"} and "only 0.05 s of sound" in done.stderr)
    return ok, f"{len(reasons)} rejected with reasons ({', '.join(sorted(reasons))}), the 0.05 s clip warned, OGG read"


def drill_disk_full(work: Path, corpus: Path) -> tuple[bool, str]:
    out = work / "full"
    fill = ("import errno, os, sys; import spectro.images as im; from spectro.cli import main; real = im.save_array; n = [0]\n"
            "def save(a, p):\n    n[0] += 1\n    if n[0] > 10: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))\n"
            "    real(a, p)\nim.save_array = save; sys.exit(main(sys.argv[1:]))")
    args = ["images", "--corpus", f"synth={corpus}", "--out", str(out), *SMALL]
    full = subprocess.run([sys.executable, "-c", fill, *args], capture_output=True, text=True)
    again = run(*args)
    with open(out / "rejected.csv", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    ok = full.returncode != 0 and "No space left" in full.stderr and again.returncode == 0 and not rejected and \
        len(list(out.rglob("*.png"))) == 128
    return ok, f"exit {full.returncode} naming the path, nothing rejected; the rerun rendered the rest"


def drill_broken_tree(work: Path, corpus: Path, tree: Path) -> tuple[bool, str]:
    copy = work / "broken_tree"
    shutil.copytree(tree, copy)
    victim = sorted(copy.rglob("*.png"))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    training = run("train", train_config(work, "broken", copy, epochs=1), "--quiet")
    repaired = run("images", "--corpus", f"synth={corpus / 'synth-a'}", "--out", copy, "--quiet", "--verify")
    (copy / "features.json").write_text("{ not json")
    corrupt = run("images", "--corpus", f"synth={corpus / 'synth-a'}", "--out", copy, "--quiet")
    ok = (training.returncode == 2 and str(victim) in training.stderr and repaired.returncode == 0
          and "1 image(s) written" in repaired.stdout and corrupt.returncode == 2 and "render it again" in corrupt.stderr)
    return ok, "training named the truncated PNG, --verify re-rendered it, a corrupt features.json said how to recover"


def drill_leakage(work: Path, corpus: Path, tree: Path) -> tuple[bool, str]:
    checkpoint = work / "ck" / "reference" / "best.pt"
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    hidden = work / "hidden_tree"
    shutil.move(tree, hidden)  # the training trees are gone
    same_speakers = run("evaluate", checkpoint, "--corpus", f"synth={corpus / 'synth-a'}", "--out", "e1", cwd=elsewhere)
    renamed = elsewhere / "copies" / "happy" / "stranger"
    renamed.mkdir(parents=True)
    shutil.copy(next((corpus / "synth-a" / "a01f").glob("*happy*.wav")), renamed / "new_name.wav")
    same_audio = run("evaluate", checkpoint, "--corpus", f"folder={elsewhere / 'copies'}", "--out", "e2", cwd=elsewhere)
    shutil.move(hidden, tree)
    ok = (same_speakers.returncode == 2 and "took part in the model's training data" in same_speakers.stderr
          and same_audio.returncode == 2 and "same audio as training recordings" in same_audio.stderr)
    return ok, "from another folder, training trees gone: training speakers and a renamed training recording refused"


def drill_paths_and_files(work: Path) -> tuple[bool, str]:
    source = work / "one.wav"
    soundfile.write(source, (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    manifest = work / "evil.csv"
    manifest.write_text(f"path,corpus,speaker,emotion,language,gender\n{source},../../evil,../../x,happy,en,\n")
    out = work / "contained"
    contained = run("images", "--manifest", manifest, "--out", out, *SMALL)
    inside = [p.resolve().is_relative_to(out.resolve()) for p in work.rglob("*evil*.png")]
    wrong_path = run("images", "--corpus", f"emodb={work / 'nowhere'}", "--out", work / "x", *SMALL)
    bad_key = run("images", "--corpus", f"synth={work}", "--out", work / "x", "--set", "image.chanels=grey")
    ok = contained.returncode == 0 and inside == [True] and wrong_path.returncode == 2 and \
        "is not a folder" in wrong_path.stderr and bad_key.returncode == 2 and "image.chanels" in bad_key.stderr
    return ok, "'../' in manifest fields stayed inside --out; a wrong path and a misspelt setting were named"


def drill_checkpoints(work: Path) -> tuple[bool, str]:
    reference = work / "ck" / "reference" / "best.pt"
    wav = work / "one.wav"
    state = torch.load(reference, weights_only=True)
    state["classes"] = ["neutral", "happy", "sad"]
    torch.save(state, work / "mismatched.pt")
    mismatched = run("predict", work / "mismatched.pt", wav, "--no-cache")
    torch.save({"model": {}, "classes": [], "config": {}, "payload": argparse.Namespace(run="code")}, work / "pickled.pt")
    pickled = run("predict", work / "pickled.pt", wav, "--no-cache")
    ok = (mismatched.returncode == 2 and "it lists 3 classes" in mismatched.stderr and pickled.returncode == 2
          and "cannot be read" in pickled.stderr)
    return ok, "a head that does not fit its classes and a pickle payload were refused with clear errors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="where the drills run (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="spectro-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SPECTRO_CACHE_DIR"] = str(work / "cache")
    from spectro.synth import generate_corpus

    corpus = work / "corpus"
    generate_corpus(corpus, speakers_per_language=2, utterances_per_emotion=8, seed=1)
    tree = work / "tree"
    # full-size pictures for the training drills: batches slow enough for a signal to land inside one
    run("images", "--corpus", f"synth={corpus / 'synth-a'}", "--out", tree, "--workers", "1", "--quiet", check=True)
    drills = [
        ("images killed (SIGKILL)", lambda: drill_images_killed(work, corpus)),
        ("training Ctrl-C mid-batch", lambda: drill_training_interrupted(work, tree, signal.SIGINT)),
        ("training SIGTERM mid-batch", lambda: drill_training_interrupted(work, tree, signal.SIGTERM)),
        ("training killed (SIGKILL)", lambda: drill_training_interrupted(work, tree, signal.SIGKILL)),
        ("two jobs on one tree or run", lambda: drill_concurrent_jobs(work, corpus, tree)),
        ("bad audio files", lambda: drill_bad_audio(work)),
        ("disk full mid-run", lambda: drill_disk_full(work, corpus)),
        ("truncated PNG, corrupt features.json", lambda: drill_broken_tree(work, corpus, tree)),
        ("leakage with the trees gone", lambda: drill_leakage(work, corpus, tree)),
        ("unsafe paths, wrong paths, bad settings", lambda: drill_paths_and_files(work)),
        ("mismatched and pickled checkpoints", lambda: drill_checkpoints(work)),
    ]
    passed = 0
    for name, drill in drills:
        start = time.perf_counter()
        try:
            ok, detail = drill()
        except Exception as error:  # a drill that crashes is a failed drill, and the others still run
            ok, detail = False, f"{type(error).__name__}: {error}"
        passed += ok
        print(f"{'PASS' if ok else 'FAIL'}  {name:<40} {detail} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"drills: {passed} of {len(drills)} passed")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed == len(drills) else 1


if __name__ == "__main__":
    sys.exit(main())
