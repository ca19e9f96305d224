"""`spectro interpolate`: WiSE-FT (Wortsman et al., CVPR 2022), weights between the LP model and the fine-tuned one.

theta = (1 - alpha) theta_LP + alpha theta_FT, where the LP model is the pretrained backbone with the
fitted head that LP-FT starts from (``lp.pt`` in the run folder) and FT the fine-tuned model (``best.pt``).
Fine-tuning gains in-distribution accuracy and loses some robustness; interpolating keeps much of both.
`alpha` is chosen by UAR on validation recordings that neither model trained on: with `apply_to`, on
stand-ins (the same recipe trained with a training corpus held out) and then applied to the final models,
as ``spectro ensemble --apply-to`` does. After interpolating, BatchNorm statistics may be re-estimated on
the model's own training recordings (never on a test corpus) where that validates better.

The result is an ordinary checkpoint: it predicts, evaluates, exports and joins ensembles like any other.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from .checkpoint_file import build_model, load_checkpoint, save_checkpoint, slim_state
from .data import ImageSet, as_sources, read_sources
from .errors import ConfigError, DataError
from .evaluate import Options, score_member
from .leakage import TrainingRecord
from .metrics import classification_metrics
from .scoring import adapt_batchnorm, batchnorm_layers, resolve_device

BN_MODES = ("interpolate", "reestimate")


@dataclasses.dataclass
class Pair:
    """A fine-tuned checkpoint and the LP model it started from."""

    ft: Path
    lp: Path

    @classmethod
    def of(cls, ft: str | os.PathLike, lp: str | os.PathLike | None = None) -> Pair:
        ft = Path(ft)
        lp = Path(lp) if lp is not None else ft.parent / "lp.pt"
        if not lp.is_file():
            raise DataError(f"{lp} does not exist: WiSE-FT interpolates towards the LP model that LP-FT starts from; "
                            "train with --set train.lp_ft=true (the run folder then holds lp.pt), or name it with --lp")
        return cls(ft, lp)


def interpolated(pair: Pair, alpha: float, *, bn: str = "interpolate", device: str = "cpu") -> dict:
    """The checkpoint (FT's record, interpolated weights) at `alpha`; `bn` "reestimate" re-estimates
    BatchNorm statistics on the FT model's own training recordings afterwards."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha={alpha} must be in [0, 1] (0: the LP model, 1: the fine-tuned one)")
    if bn not in BN_MODES:
        raise ConfigError(f"bn={bn!r} must be one of {list(BN_MODES)}")
    ft, lp = load_checkpoint(pair.ft), load_checkpoint(pair.lp)
    if (ft["model_name"], list(ft["classes"])) != (lp["model_name"], list(lp["classes"])):
        raise ConfigError(f"{pair.lp} ({lp['model_name']}, {lp['classes']}) is not the LP model of {pair.ft} "
                          f"({ft['model_name']}, {ft['classes']})")
    weights = {key: (1 - alpha) * lp["model"][key] + alpha * value if value.is_floating_point() else value
               for key, value in ft["model"].items()}
    state = slim_state({**ft, "model": weights, "wise_ft": {"alpha": alpha, "bn": bn, "lp": str(pair.lp),
                                                            "ft": str(pair.ft)}})
    if bn == "reestimate":
        state["model"] = _reestimated(state, device=device)
    return state


def _reestimated(state: dict, *, device: str) -> dict:
    """The weights with BatchNorm statistics taken afresh from the training recordings the checkpoint names."""
    device = resolve_device(device)
    model = build_model(state, device=device)
    if not batchnorm_layers(model):
        raise ConfigError(f"{state['model_name']} has no BatchNorm layer; use bn=interpolate")
    record = TrainingRecord.from_checkpoint(state)
    entries = [as_sources(e) for e in state["config"]["data"]["train"]]
    try:
        rows, _ = read_sources(entries, state["classes"], state["config"].get("labels", {}).get("map"))
    except DataError as error:
        raise DataError(f"re-estimating BatchNorm needs the model's training trees: {error}") from None
    rows = [r for r in rows if record is None or r[1].speaker in set(record.train_speakers)]
    images = ImageSet([p for p, _ in rows], [u for _, u in rows], None, desc="training images", progress=False)
    adapt_batchnorm(model, images, device=device, batch_size=2 * state["config"]["train"]["batch_size"])
    return {k: v.cpu() for k, v in model.state_dict().items()}


def choose_alpha(pair: Pair, validation: Sequence[tuple[str, str]], out_dir: Path, *,
                 alphas: Sequence[float], bn_modes: Sequence[str] = ("interpolate",), **options) -> tuple[dict, list]:
    """The (alpha, bn) with the best UAR on the validation recordings of `validation` corpora (the
    speakers the fine-tuned model held out); returns the choice and every candidate's UAR."""
    record = TrainingRecord.from_checkpoint(load_checkpoint(pair.ft))
    if record is None or not record.val_speakers:
        raise DataError(f"{pair.ft} keeps no record of its validation speakers, on which alpha is chosen")
    opts = Options(corpora=list(validation), speakers=record.val_speakers, **options)
    scores = []
    for bn in bn_modes:
        for alpha in alphas:
            candidate = out_dir / f"alpha{alpha:.3f}_{bn}.pt"
            save_checkpoint(interpolated(pair, alpha, bn=bn, device=opts.device), candidate)
            member = score_member(candidate, out_dir / "images", opts)
            uar = _pooled_uar(member)
            scores.append({"alpha": alpha, "bn": bn, "uar": uar})
            candidate.unlink()
    best = max(scores, key=lambda s: (s["uar"], s["bn"] == "interpolate", -abs(s["alpha"] - 0.5)))
    return best, scores


def _pooled_uar(member) -> float:
    """UAR over every validation recording of every corpus scored."""
    import numpy as np

    classes = list(member.state["classes"])
    labels = [classes.index(u.emotion) for test in member.tests.values() for _, u in test.rows]
    predicted = np.concatenate([member.probabilities[name] for name in member.tests]).argmax(1)
    return classification_metrics(labels, predicted.tolist(), labels=range(len(classes)))["uar"]


def write_interpolated(pair: Pair, out: str | os.PathLike, *, alpha: float | None = None, bn: str = "interpolate",
                       validation: Sequence[tuple[str, str]] = (), alphas: Sequence[float] = (),
                       bn_modes: Sequence[str] = ("interpolate",), apply_to: Pair | None = None,
                       **options) -> tuple[Path, dict]:
    """Write the interpolated checkpoint: at `alpha`, or at the (alpha, bn) that `validation` chooses for
    `pair` (stand-ins), applied to `apply_to` (final models) where given. Returns (file, its WiSE-FT record)."""
    out = Path(out)
    chosen_by = None
    if alpha is None:
        if not validation:
            raise ConfigError("give --alpha, or --validation NAME=PATH to choose it")
        work = out.parent / f"{out.stem}.validation"
        work.mkdir(parents=True, exist_ok=True)
        best, scores = choose_alpha(pair, validation, work, alphas=alphas, bn_modes=bn_modes, **options)
        alpha, bn = best["alpha"], best["bn"]
        chosen_by = {"criterion": "UAR on validation recordings", "corpora": [n for n, _ in validation],
                     "on": str(pair.ft), "candidates": scores, "uar": best["uar"]}
    state = interpolated(apply_to or pair, alpha, bn=bn, device=options.get("device", "cpu"))
    if chosen_by is not None:
        state["wise_ft"]["chosen_by"] = chosen_by
    save_checkpoint(state, out)
    return out, state["wise_ft"]

