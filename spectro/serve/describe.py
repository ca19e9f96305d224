"""`GET /v1/model`: what the served model is, read from its checkpoint(s): classes, feature settings, training
corpora, validation metrics, and every step that adapts it to audio it was not trained on (transductive).

Nothing here names a server path: members are told apart by their run names and models.
"""

from __future__ import annotations

from ..inference import EnsemblePredictor, Predictor


def describe_model(predictor: Predictor | EnsemblePredictor) -> dict:
    """The model card of a Predictor, or of an ensemble (its members', each with its weight)."""
    if not isinstance(predictor, EnsemblePredictor):
        return {"classes": list(predictor.classes), "ensemble": False, **_member_card(predictor)}
    members = [{"weight": weight, **_member_card(member)}
               for member, weight in zip(predictor.predictors, predictor.weights)]
    return {"classes": list(predictor.classes), "ensemble": True,
            "model": "+".join(m["model"] for m in members),
            "train_corpora": sorted({c for m in members for c in m["train_corpora"]}),
            "transductive": list(dict.fromkeys(t for m in members for t in m["transductive"])),
            "scoring": "the weighted mean of the members' probabilities (no per-window results)",
            "members": members}


def _member_card(predictor: Predictor) -> dict:
    """One checkpoint: its model, training, chosen epoch's validation metrics, inputs and normalisation."""
    state = predictor.checkpoint
    best, history = state.get("best") or {}, {h["epoch"]: h for h in state.get("history", [])}
    audio = predictor.audio
    return {
        "model": state.get("model_name"),
        "run": (state.get("config") or {}).get("run", {}).get("name"),
        "epoch": best.get("epoch", state.get("epoch")),
        "train_corpora": list(state.get("train_corpora", [])),
        "validation": history.get(best.get("epoch"), {}).get("val"),
        "inputs": dict(state["inputs"]),  # the feature settings, as training recorded them
        "windows": {"duration": audio.duration, "hop": audio.window_hop, "align": audio.align,
                    "scoring": "mean of window probabilities"},
        "normalisation": {name: _normalisation(predictor, name) for name in predictor.inputs},
        "transductive": _transductive(predictor),
        "precision": "autocast " + str(predictor.autocast).removeprefix("torch.") if predictor.autocast else "float32",
    }


def _normalisation(predictor: Predictor, name: str) -> dict:
    """How input `name` is standardised when served: its mode, and whose statistics."""
    mode = predictor.inputs[name].normalise.mode
    if mode == "none":
        return {"mode": mode, "statistics": None}
    if name in predictor.reference:
        return {"mode": mode, "statistics": "pooled over the reference recordings given at start (--normalise-with)"}
    return {"mode": mode, "statistics": "each recording's own"}


def _transductive(predictor: Predictor) -> list[str]:
    """Steps that use unlabelled audio of the data scored: recorded at training (domain-adversarial targets,
    say), and the normalisation of each served recording with its own statistics or the references'."""
    steps = list(predictor.checkpoint.get("transductive", []))
    for name, features in predictor.inputs.items():
        mode = features.normalise.mode
        if features.normalise.grouped:
            whose = "the reference recordings'" if name in predictor.reference else "each recording's own"
            steps.append(f"{mode} normalisation of input {name!r} with {whose} unlabelled statistics")
    return steps
