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
    return subprocess.run([*SPECTRO, *map(str, args)], capture_output=True, text=True, errors="surrogateescape",
                          env=env,
                          **kwargs)


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
    return ok, "a second images job and a second training of one run were refused, naming the holder; the first ended"


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
    ok = (done.returncode == 0 and "2 recording(s) rendered" not in done.stdout and set(reasons) == {
        "corrupt.wav", "empty.wav", "silent.wav", "song.m4a"} and "only 0.05 s of sound" in done.stderr)
    return ok, f"{len(reasons)} rejected with reasons ({', '.join(sorted(reasons))}), the 0.05 s clip warned, OGG read"


def drill_disk_full(work: Path, corpus: Path) -> tuple[bool, str]:
    out = work / "full"
    fill = ("import errno, os, sys; import spectro.rendering as rendering; from spectro.cli import main; real = "
            "rendering.save_window; n = [0]\n"
            "def save(a, p):\n    n[0] += 1\n    if n[0] > 10: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "
            "str(p))\n"
            "    real(a, p)\nrendering.save_window = save; sys.exit(main(sys.argv[1:]))")
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
          and "1 recording(s) rendered" in repaired.stdout and corrupt.returncode == 2
          and "render it again" in corrupt.stderr)
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
    torch.save({"model": {}, "classes": [], "config": {}, "payload": argparse.Namespace(run="code")},
               work / "pickled.pt")
    pickled = run("predict", work / "pickled.pt", wav, "--no-cache")
    ok = (mismatched.returncode == 2 and "it lists 3 classes" in mismatched.stderr and pickled.returncode == 2
          and "cannot be read" in pickled.stderr)
    return ok, "a head that does not fit its classes and a pickle payload were refused with clear errors"


# --------------------------------------------------------------------------- hostile input (the hardening issue)
def _no_traceback(*runs) -> bool:
    return all("Traceback" not in r.stderr and "weights_only" not in r.stderr for r in runs)


def drill_damaged_checkpoint(work: Path, corpus: Path) -> tuple[bool, str]:
    data = bytearray((work / "ck" / "reference" / "best.pt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(b ^ 0xFF for b in data[middle:middle + 2000])
    damaged = work / "damaged.pt"
    damaged.write_bytes(bytes(data))
    runs = [run("predict", damaged, work / "one.wav", "--no-cache"),
            run("evaluate", damaged, "--corpus", f"synth={corpus / 'synth-b'}", "--out", work / "damaged_report"),
            run("export", damaged, "--format", "slim", "--out", work / "damaged_slim.pt")]
    ok = all(r.returncode == 2 and "is damaged" in r.stderr for r in runs) and not (work / "damaged_slim.pt").exists()
    return ok and _no_traceback(*runs), "2,000 flipped bytes: predict, evaluate and export refused the damaged file"


def drill_run_escape(work: Path, tree: Path) -> tuple[bool, str]:
    escaped = run("train", train_config(work, "escape", tree, epochs=1), "--run-name", "../../x", "--quiet")
    outside = [p for p in (work.parent, work.parent.parent) if (p / "x").exists()]
    ok = escaped.returncode == 2 and "run.name" in escaped.stderr and not outside
    return ok, "--run ../../x refused, nothing written"


def drill_non_utf8_names(work: Path) -> tuple[bool, str]:
    folder = os.path.join(os.fsencode(work), b"latin1", b"angry", b"spk1")
    os.makedirs(folder)
    t = np.arange(16000) / 16000
    for name, f in ((b"caf\xe9_latin1.flac", 200), (b"plain.flac", 300)):
        soundfile.write(os.path.join(folder, name), (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    corpus = os.fsdecode(os.path.join(os.fsencode(work), b"latin1"))
    runs = [run("manifest", "--corpus", f"folder={corpus}", "--out", work / "latin1.csv"),
            run("images", "--corpus", f"folder={corpus}", "--out", work / "latin1_tree", *SMALL),
            run("predict", work / "ck" / "reference" / "best.pt", corpus, "--json")]
    ok = all(r.returncode == 0 for r in runs) and (work / "latin1_tree" / "manifest.csv").is_file() and \
        len(runs[2].stdout.splitlines()) == 2
    return ok and _no_traceback(*runs), "manifest, images and predict handled a Latin-1 file name, byte for byte"


def drill_ctrl_c_message(work: Path, corpus: Path) -> tuple[bool, str]:
    out = work / "images_ctrl_c"
    process = subprocess.Popen([*SPECTRO, "images", "--corpus", f"synth={corpus}", "--out", str(out), "--set",
                                "image.size=32", "--workers", "2", "--quiet"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    while len(list(out.rglob("*.png"))) < 20 and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate()
    ok = process.returncode == 130 and "run the same command again" in error and "ForkPoolWorker" not in error
    return ok, f"exit {process.returncode}: {error.strip().splitlines()[-1][:70] if error.strip() else 'nothing said'}"


def drill_not_checkpoints(work: Path) -> tuple[bool, str]:
    kinds = {"empty.pt": b"", "text.pt": b"101\n", "random.pt": os.urandom(4096),
             "ensemble.json.pt": json.dumps({"spectro_ensemble": 1}).encode(),
             "audio.pt": (work / "one.wav").read_bytes()}
    runs = []
    for name, content in kinds.items():
        (work / name).write_bytes(content)
        runs.append(run("predict", work / name, work / "one.wav", "--no-cache"))
    ok = all(r.returncode == 2 and "not a spectro checkpoint" in r.stderr for r in runs) and _no_traceback(*runs)
    return ok, "empty, text, random, JSON and audio files: each named for what it is, no unpickler advice"


def drill_untrusted_export(work: Path) -> tuple[bool, str]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from spectro.checkpoint_file import save_checkpoint
    from spectro.models import create_model

    model = create_model("svm", 2)
    model.pipeline, model.fitted = Pipeline([("f", FunctionTransformer(os.system))]), True
    save_checkpoint({"model": model.state_dict(), "classes": ["a", "b"], "model_name": "svm",
                     "config": {"run": {"name": "x"}}, "inputs": {"image": {"feature": "stats"}}}, work / "svm_evil.pt")
    export = run("export", work / "svm_evil.pt", "--format", "slim", "--out", work / "svm_evil_slim.pt")
    ok = export.returncode == 2 and "posix.system" in export.stderr and not (work / "svm_evil_slim.pt").exists()
    return ok, "export refused a pipeline holding posix.system and wrote nothing"


def drill_yaml(work: Path, tree: Path) -> tuple[bool, str]:
    config = train_config(work, "yaml", tree, epochs=1)
    malformed = run("config", "show", config, "--set", "run.name=[unclosed")
    tagged = run("config", "show", config, "--set", "run.name=!!python/object/apply:os.system ['true']")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (work / "bomb.yaml").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    bomb = run("config", "show", work / "bomb.yaml", timeout=60)
    seconds = time.perf_counter() - start
    ok = all(r.returncode == 2 for r in (malformed, tagged, bomb)) and _no_traceback(malformed, tagged, bomb) and \
        "expands to more than" in bomb.stderr and seconds < 10
    return ok, f"malformed and tagged --set values named; a billion-laughs file refused in {seconds:.1f} s"


def drill_symlink_root(work: Path) -> tuple[bool, str]:
    corpus = work / "linked" / "happy"
    t = np.arange(8000) / 16000
    for folder in (corpus / "spk1", work / "elsewhere" / "spk2"):
        folder.mkdir(parents=True)
        for i in range(3):
            soundfile.write(folder / f"{folder.name}_{i}.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
                            16000)
    (corpus / "root").symlink_to("/")
    (corpus / "spk2").symlink_to(work / "elsewhere" / "spk2")
    start = time.perf_counter()
    done = run("manifest", "--corpus", f"folder={work / 'linked'}", "--out", work / "linked.csv", timeout=60)
    rows = len((work / "linked.csv").read_text().splitlines()) - 1 if done.returncode == 0 else 0
    ok = done.returncode == 0 and rows == 6 and "filesystem root" in done.stderr and time.perf_counter() - start < 20
    return ok, f"a link to / was not walked; the linked speaker folder was kept ({rows} rows)"


def drill_disk_full_checkpoint(work: Path, tree: Path) -> tuple[bool, str]:
    config = train_config(work, "full_checkpoint", tree, epochs=2)
    fill = ("import errno, os, sys; import spectro.checkpoint_file as cf; from spectro.cli import main; n = [0]\n"
            "real = cf.save_checkpoint\n"
            "def save(state, path):\n    n[0] += 1\n    if n[0] == 3:\n"
            "        import torch; cf.torch.save = lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "
            "os.strerror(errno.ENOSPC)))\n    real(state, path)\ncf.save_checkpoint = save\n"
            "import spectro.training.run_folder as rf; rf.save_checkpoint = save; sys.exit(main(sys.argv[1:]))")
    full = subprocess.run([sys.executable, "-c", fill, "train", str(config), "--quiet"], capture_output=True, text=True)
    saved = (work / "ck" / "full_checkpoint" / "last.pt").is_file()
    resumed = run("train", config, "--quiet", "--resume")
    ok = full.returncode == 2 and "No space left on device" in full.stderr and "Traceback" not in full.stderr and \
        saved and resumed.returncode == 0
    return ok, "a full disk while saving last.pt: a clear message, the saved state kept, --resume finished"


def drill_bad_ensembles(work: Path) -> tuple[bool, str]:
    from spectro.ensemble_file import Member, write_ensemble

    member = work / "ck" / "reference" / "best.pt"
    files = {"truncated.json": '{"spectro_ensemble": 1, "members": [',
             "fields.json": '{"spectro_ensemble": 1, "classes": ["a", "b"], "members": [{"weight": "x"}]}',
             "list.json": "[1, 2, 3]"}
    for name, content in files.items():
        (work / name).write_text(content)
    write_ensemble(work / "classes.json", [Member(str(member), 1.0)], classes=["a", "b", "c", "d"], chosen_by={})
    runs = [run("predict", work / name, work / "one.wav") for name in [*files, "classes.json"]]
    ok = all(r.returncode == 2 for r in runs) and _no_traceback(*runs) and \
        "the file names the classes" in runs[-1].stderr
    return ok, "truncated, mistyped and mismatched ensemble files refused with the field at fault"


def drill_export_ensemble(work: Path) -> tuple[bool, str]:
    export = run("export", work / "classes.json", "--format", "onnx", "--out", work / "ensemble.onnx")
    ok = export.returncode == 2 and "export takes one checkpoint" in export.stderr
    return ok, "export of an ensemble file said to export each member"


def drill_tensorboard_clash(work: Path, tree: Path) -> tuple[bool, str]:
    config = train_config(work, "clash", tree, epochs=1)
    first = run("train", config, "--quiet")
    second = run("train", config, "--quiet", "--set", f"run.checkpoint_dir={work / 'ck_other'}")
    ok = first.returncode == 0 and second.returncode == 2 and "holds the logs of the run" in second.stderr
    return ok, "a second run of one name in another checkpoint_dir was refused its TensorBoard folder"


def drill_unknown_class(work: Path, corpus: Path) -> tuple[bool, str]:
    typo = run("manifest", "--corpus", f"synth={corpus}", "--classes", "neutral,hapy,sad", "--out", work / "typo.csv")
    ok = typo.returncode == 2 and "'hapy'" in typo.stderr and not (work / "typo.csv").exists()
    return ok, "--classes neutral,hapy,sad named the misspelt class and the labels there are"


def drill_broken_pipe(work: Path, corpus: Path) -> tuple[bool, str]:
    head = subprocess.run(f"{sys.executable} -m spectro predict {work / 'ck' / 'reference' / 'best.pt'} "
                          f"{corpus / 'synth-b'} --segments | head -1", shell=True, capture_output=True, text=True)
    ok = len(head.stdout.splitlines()) == 1 and "Broken pipe" not in head.stderr and "Traceback" not in head.stderr
    return ok, "spectro predict ... | head -1 printed one line and nothing else"


def drill_failed_evaluate(work: Path) -> tuple[bool, str]:
    report = work / "failed_report"
    failed = run("evaluate", work / "ck" / "reference" / "best.pt", "--corpus", f"emodb={work / 'nowhere'}", "--out",
                 report)
    return failed.returncode == 2 and not report.exists(), "an evaluate failing on a bad corpus left no --out folder"


def drill_file_given_twice(work: Path) -> tuple[bool, str]:
    folder = work / "twice"
    folder.mkdir()
    shutil.copy(work / "one.wav", folder / "one.wav")
    twice = run("predict", work / "ck" / "reference" / "best.pt", folder / "one.wav", folder, "--json")
    ok = twice.returncode == 0 and len(twice.stdout.splitlines()) == 1
    return ok, "a file named directly and through its folder was scored once"


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
        ("a damaged checkpoint", lambda: drill_damaged_checkpoint(work, corpus)),
        ("--run escaping its folders", lambda: drill_run_escape(work, tree)),
        ("non-UTF-8 file names", lambda: drill_non_utf8_names(work)),
        ("Ctrl-C during images", lambda: drill_ctrl_c_message(work, corpus)),
        ("files that are no checkpoint", lambda: drill_not_checkpoints(work)),
        ("an untrusted type exported", lambda: drill_untrusted_export(work)),
        ("malformed, tagged, exploding YAML", lambda: drill_yaml(work, tree)),
        ("a symlink to / in a corpus", lambda: drill_symlink_root(work)),
        ("a full disk saving a checkpoint", lambda: drill_disk_full_checkpoint(work, tree)),
        ("malformed ensemble files", lambda: drill_bad_ensembles(work)),
        ("export given an ensemble", lambda: drill_export_ensemble(work)),
        ("one TensorBoard folder, two runs", lambda: drill_tensorboard_clash(work, tree)),
        ("a misspelt class", lambda: drill_unknown_class(work, corpus)),
        ("predict into a closed pipe", lambda: drill_broken_pipe(work, corpus)),
        ("evaluate failing on a bad corpus", lambda: drill_failed_evaluate(work)),
        ("one file given twice", lambda: drill_file_given_twice(work)),
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
