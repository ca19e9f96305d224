"""Checkpoints: everything needed to resume or to predict, loadable with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import DataError
from .fileio import atomic_open, describe_path


# What only resuming a run needs; inference files (best.pt, `spectro export --format slim`) leave it out.
RESUME_ONLY = ("optimizer", "scheduler", "plateau", "scaler", "rng", "partial", "batch", "bad_epochs", "finished",
               "ema", "domain_head")


def slim_state(state: dict) -> dict:
    """A checkpoint for inference: weights, classes, feature settings and the record of how they were
    trained, without optimiser, scheduler or RNG state (a third of the size for EfficientNet-Lite0)."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to a temporary file, then rename it onto `path` (never a torn checkpoint)."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a spectro checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {describe_path(path)} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise DataError(f"checkpoint {str(path)!r} cannot be read: {error}") from None
    missing = [key for key in ("model", "classes", "config") if key not in state]
    missing += [] if "inputs" in state or "features" in state else ["inputs"]
    if missing:
        raise DataError(f"{str(path)!r} is not a spectro checkpoint: it lacks {missing}")
    if "inputs" not in state:  # written before checkpoints named their inputs: one input's "features"
        from .data import SINGLE_INPUT

        state["inputs"] = {SINGLE_INPUT: state.pop("features")}
    return state


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
