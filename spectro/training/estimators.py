"""The short path for scikit-learn baselines: one fit on the training split, with an optional grid
search whose every candidate is fitted on the training split and scored on the validation data."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ..data import SINGLE_INPUT, ImageSet
from ..errors import ConfigError, DataError
from ..metrics import classification_metrics
from ..scoring import predict_proba
from .optim import sample_weights

log = logging.getLogger(__name__)


def fit_estimator(run) -> tuple[dict, list | None]:
    """Fit `run.net` (an ``EstimatorClassifier``); returns its training metrics and the grid search's
    validation UAR per candidate (None without model.search)."""
    from sklearn.utils.validation import has_fit_parameter

    cfg, model, train = run.config, run.net, run.splits.train
    X, y = vectors(train), train.window_labels.numpy()
    balance = cfg.train.class_balance  # "loss" and "sampler" weigh classes equally; "corpus" every (corpus, class)
    weights = (None if balance == "none"
               else sample_weights(train, "corpus" if balance == "corpus" else "sampler").double().numpy())
    if weights is not None and not has_fit_parameter(model.pipeline.named_steps["clf"], "sample_weight"):
        log.warning("%s takes no sample weights: train.class_balance=%s is not applied", cfg.model.name,
                    cfg.train.class_balance)
        weights = None
    seeds = {k: cfg.train.seed for k in model.pipeline.get_params() if k.endswith("random_state")}
    try:
        model.pipeline.set_params(**seeds, **cfg.model.params)
    except ValueError as error:
        raise ConfigError(f"model.params: {error}") from None
    group_internal_folds(model, train)
    search = _grid_search(model, X, y, weights, run.splits.val) if cfg.model.search else None
    try:
        model.fit(X, y, sample_weight=weights)
    except ValueError as error:  # e.g. too few utterances per class for the model's internal folds
        raise DataError(f"{cfg.model.name} cannot be fitted on this training split: {error}") from None
    probs = predict_proba(model, train, device=run.device)
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), train.labels).item()
    metrics = classification_metrics(train.labels.tolist(), probs.argmax(1).tolist(),
                                     labels=range(len(run.splits.classes)))
    return {**metrics, "loss": loss}, search


def _grid_search(model, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, val: ImageSet) -> list:
    """Every candidate of the model's grid fitted on the training split and scored by validation UAR;
    the best one's parameters are set on the model."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    X_val = vectors(val)
    fold = np.r_[np.full(len(X), -1), np.zeros(len(X_val))]  # train on the split, score on validation
    fit_params = {} if weights is None else {"clf__sample_weight": np.r_[weights, np.ones(len(X_val))]}
    search = GridSearchCV(model.pipeline, model.search_space, scoring="balanced_accuracy", cv=PredefinedSplit(fold),
                          refit=False, n_jobs=-1)
    search.fit(np.vstack([X, X_val]), np.r_[y, val.window_labels.numpy()], **fit_params)
    model.pipeline.set_params(**search.best_params_)
    log.info("grid search: best %s (validation UAR %.3f)", search.best_params_, search.best_score_)
    return [{"params": p, "val_uar": float(s)} for p, s in
            zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])]


def group_internal_folds(model, train: ImageSet) -> None:
    """With augmented copies, keep each recording's copies on one side of a model's internal splits:
    calibration folds are grouped by recording, and the MLP's random early-stopping hold-out is off."""
    recordings = [train.utterances[i].path for i in train.owner.tolist()]
    if len(set(recordings)) == len(recordings):
        return
    from sklearn.model_selection import GroupKFold

    params = model.pipeline.get_params()
    folds = list(GroupKFold(5).split(recordings, groups=recordings))
    grouped = {k: folds for k in params if k.endswith("__cv")}
    grouped |= {k: False for k in params if k.endswith("early_stopping")}
    if grouped:
        log.info("augmented copies present: %s", ", ".join(f"{k} grouped by recording" if k.endswith("cv")
                                                            else f"{k}=False" for k in grouped))
        model.pipeline.set_params(**grouped)


def vectors(images: ImageSet) -> np.ndarray:
    """The (windows, features) matrix a scikit-learn baseline reads: utterance statistics."""
    shape = images.window_shape(SINGLE_INPUT)
    if len(shape) != 1 or int(images.lengths[SINGLE_INPUT].max()) != 1:
        raise ConfigError(f"scikit-learn baselines read one vector per utterance, not inputs of shape {shape}; train "
                          "them on trees made with --feature stats")
    stored, _, _ = images.stored(torch.arange(images.n_windows))
    return stored[SINGLE_INPUT][:, :, 0].double().numpy()
