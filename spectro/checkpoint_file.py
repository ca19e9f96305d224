"""Checkpoint files: everything needed to resume or to predict, loadable with ``weights_only=True``, checked
for damage on load, and refused with a plain reason when a file is something else."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch

from .errors import DataError, StorageError
from .fileio import atomic_open, describe_path

# What only resuming a run needs; inference files (best.pt, `spectro export --format slim`) leave it out.
RESUME_ONLY = ("optimizer", "scheduler", "plateau", "scaler", "rng", "partial", "batch", "bad_epochs", "finished",
               "ema", "domain_head")


def slim_state(state: dict) -> dict:
    """A checkpoint for inference: weights, classes, feature settings and the record of how they were
    trained, without optimiser, scheduler or RNG state (a third of the size for EfficientNet-Lite0)."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to a temporary file, then rename it onto `path` (never a torn checkpoint). A machine
    that stops the write (a full disk) raises StorageError naming the file; the file already there stays."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        guarded = _GuardedWriter(handle)
        try:
            torch.save(state, guarded)
        except (RuntimeError, OSError) as error:
            cause = guarded.error or (error if isinstance(error, OSError) else None)
            if cause is None:
                raise
            raise StorageError(f"cannot write {path}: {cause.strerror or cause}; the checkpoint saved before is kept "
                               "there; free space or fix the permissions, then run the same command again "
                               "(with --resume for training)") from None


class _GuardedWriter:
    """A file for torch.save that keeps the OSError a write raised: torch reports it as an opaque RuntimeError
    ('unexpected pos ...')."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a spectro checkpoint without unpickling arbitrary objects, after checking that none of its bytes
    changed since it was written (every entry's CRC-32)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {describe_path(path)} does not exist")
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        reason = (f"it holds an object of type {found.group(1)}" if found
                  else f"{type(error).__name__}: {str(error)[:200]}")
        raise DataError(f"checkpoint {str(path)!r} cannot be read safely ({reason}): spectro checkpoints hold only "
                        "tensors and plain data, and nothing else is ever unpickled") from None
    missing = [key for key in ("model", "classes", "config") if not isinstance(state, dict) or key not in state]
    missing += [] if isinstance(state, dict) and ("inputs" in state or "features" in state) else ["inputs"]
    if missing:
        raise DataError(f"{str(path)!r} is not a spectro checkpoint: it lacks {missing}")
    if "inputs" not in state:  # written before checkpoints named their inputs: one input's "features"
        from .models import SINGLE_INPUT

        state["inputs"] = {SINGLE_INPUT: state.pop("features")}
    return state


def _check_archive(path: Path) -> None:
    """Refuse a file that is not a checkpoint, saying what it looks like, and a checkpoint whose bytes changed."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head.startswith(b"PK\x03\x04"):
        raise DataError(f"{str(path)!r} is not a spectro checkpoint: it is {describe_file(path, head)}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"checkpoint {str(path)!r} is damaged ({error}): it was cut short or altered after it was "
                        "written; use another copy, or train again") from None
    if damaged is not None:
        raise DataError(f"checkpoint {str(path)!r} is damaged: its part {damaged} fails its checksum, so bytes of it "
                        "changed after it was written; use another copy, or train again")
    if any(name.endswith("/constants.pkl") for name in names):
        raise DataError(f"{str(path)!r} is not a spectro checkpoint: it is a TorchScript module (`spectro export "
                        "--format torchscript`); load it with torch.jit.load")
    if not any(name.endswith("/data.pkl") for name in names):
        raise DataError(f"{str(path)!r} is not a spectro checkpoint: it is a zip archive of other files")


def describe_file(path: Path, head: bytes) -> str:
    """What a file that is no checkpoint looks like, with what to do with it where spectro knows."""
    if not head:
        return "empty (0 bytes): it was cut short while being written, or never written"
    text = _text(head)
    if text is not None and text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return "a JSON file that is cut short or not valid JSON"
        if isinstance(data, dict) and "spectro_ensemble" in data:
            return "an ensemble file (JSON): give it to spectro evaluate or spectro predict, which take ensembles"
        return "a JSON file"
    kinds = ((b"RIFF", "a WAV audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg audio file"),
             (b"ID3", "an MP3 audio file"), (b"\xff\xfb", "an MP3 audio file"), (b"\x89PNG", "a PNG picture"))
    for magic, kind in kinds:
        if head.startswith(magic):
            return kind + " (a checkpoint is a .pt file written by spectro train or spectro export --format slim)"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return "an ONNX graph (`spectro export --format onnx`): run it with onnxruntime"
    if text is not None:
        return f"a text file (it begins {text.strip()[:40]!r})"
    return "neither a checkpoint nor a kind of file spectro knows (unrecognised binary data)"


def _text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def build_model(state: dict, *, device: str | torch.device = "cpu"):
    """The model of a loaded checkpoint, ready for inference. Weights come from the checkpoint alone
    (no ImageNet download); class names and feature settings travel with it."""
    from .models import create_model

    classes = list(state["classes"])
    model = create_model(state["model_name"], len(classes), pretrained=False, in_channels=state.get("in_channels"))
    wanted = model.state_dict()
    misfits = [(k, tuple(v.shape), tuple(wanted[k].shape)) for k, v in state["model"].items()
               if k in wanted and hasattr(v, "shape") and v.shape != wanted[k].shape]
    if misfits:
        key, saved, expected = misfits[-1]  # the classifier comes last
        outputs = f" has {saved[0]} outputs{_setup_names(saved[0])}" if saved[:1] != expected[:1] else f" is {saved}"
        raise DataError(f"the checkpoint's weights do not fit its class list: its {key}{outputs}, but it lists "
                        f"{len(classes)} classes {classes} (expected {expected}); it was edited or written by "
                        "another program")
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _setup_names(count: int) -> str:
    from .corpora import CLASS_SETUPS

    return f" (the {count}-class setup: {list(CLASS_SETUPS[count])})" if count in CLASS_SETUPS else ""


def load_trained_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """The model of a checkpoint file, ready for inference, with the checkpoint itself."""
    state = load_checkpoint(path, map_location=device)
    return build_model(state, device=device), state
