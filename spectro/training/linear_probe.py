"""The LP stage of LP-FT (Kumar et al., ICLR 2022): the new classifier fitted to convergence on frozen features.

Fine-tuning a pretrained network with a random head distorts the pretrained features while the head is
still wrong, which costs out-of-distribution accuracy; fitting the head first, as a logistic regression
on the frozen backbone's pooled features, and only then fine-tuning everything at a small rate keeps
them. The regression's strength is chosen by validation UAR, the criterion of every other choice in a run.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ..data import ImageSet, batches
from ..errors import ConfigError
from ..metrics import classification_metrics
from ..models import has_pooled_features
from ..scoring import utterance_means
from .optim import sample_weights

log = logging.getLogger(__name__)

STRENGTHS = (0.001, 0.01, 0.1, 1.0)  # inverse regularisation C of the logistic regression, chosen on validation


@torch.no_grad()
def pooled_features(model: nn.Module, images: ImageSet, *, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """The pooled features the classifier reads, (windows, features), of every window, in eval mode."""
    model.eval()
    out = []
    for index in batches(torch.arange(images.n_windows), batch_size):
        inputs, _, _ = images.batch(index)
        pooled, _ = model.pooled_and_logits(next(iter(inputs.values())).to(device))
        out.append(pooled.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.num_features), np.float32)


def fit_linear_probe(net: nn.Module, splits, *, config, device: torch.device) -> dict:
    """Fit the classifier of `net` on its frozen pretrained features (the training windows, weighted as
    ``train.class_balance`` draws them), choosing C by validation UAR; returns what was fitted."""
    from sklearn.linear_model import LogisticRegression

    if not has_pooled_features(net):
        raise ConfigError(f"train.lp_ft fits a linear head on pooled features; {config.model.name!r} has none "
                          "(single-input ImageNet CNNs only)")
    size = 2 * config.train.batch_size
    X, X_val = (pooled_features(net, s, device=device, batch_size=size) for s in (splits.train, splits.val))
    y = splits.train.window_labels.numpy()
    weights = _weights(splits.train, config.train.class_balance)
    scaler = GlobalScaler().fit(X)
    fits = []
    for strength in STRENGTHS:
        probe = LogisticRegression(C=strength, max_iter=3000).fit(scaler.transform(X), y, sample_weight=weights)
        windows = torch.from_numpy(_padded_proba(probe, scaler.transform(X_val), len(splits.classes)))
        uar = classification_metrics(splits.val.labels.tolist(),
                                     utterance_means(windows, splits.val.owner, len(splits.val)).argmax(1).tolist(),
                                     labels=range(len(splits.classes)))["uar"]
        fits.append((uar, -strength, probe))
    uar, strength, probe = max(fits, key=lambda f: f[:2])
    set_head(net, probe, scaler, len(splits.classes))
    log.info("linear probe: C=%g, validation UAR %.3f (of %s)", -strength, uar,
             ", ".join(f"C={-s:g}: {u:.3f}" for u, s, _ in fits))
    return {"C": -strength, "val_uar": uar, "tried": {str(-s): u for u, s, _ in fits}}


class GlobalScaler:
    """Features centred per dimension and divided by one overall standard deviation. Dividing each dimension by
    its own would blow up the weights of nearly constant ones (channels a ReLU keeps at zero), whose small shifts
    once the network trains in train mode would then swamp the head's logits."""

    def fit(self, X: np.ndarray) -> GlobalScaler:
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.full(X.shape[1], max(float((X - self.mean_).std()), 1e-6))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_


def _weights(train: ImageSet, balance: str) -> np.ndarray | None:
    """Per-window weights averaging 1: the balanced samplers' draw weights, or inverse class frequency for
    a class-weighted loss; None for `none`."""
    if balance == "none":
        return None
    drawn = sample_weights(train, "sampler" if balance == "loss" else balance)
    w = drawn.double().numpy()
    return w * len(w) / w.sum()


def _padded_proba(probe, X: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities in the run's class order (a class absent from training gets 0)."""
    out = np.zeros((len(X), num_classes), np.float32)
    out[:, probe.classes_] = probe.predict_proba(X)
    return out


def set_head(net: nn.Module, probe, scaler, num_classes: int) -> None:
    """Write the fitted regression into the network's classifier: logits = W (x - mean) / scale + b, folded
    into one linear layer, so the network's logits are the regression's decision function."""
    head = net.net.get_classifier()
    weight = np.zeros((num_classes, probe.coef_.shape[1]))
    bias = np.full(num_classes, -1e4)  # a class the training windows lack is never predicted
    rows = probe.classes_
    if len(rows) == 2 and probe.coef_.shape[0] == 1:  # scikit-learn keeps one row for two classes
        coef, intercept = np.vstack([-probe.coef_[0] / 2, probe.coef_[0] / 2]), np.array([-1, 1]) * probe.intercept_ / 2
    else:
        coef, intercept = probe.coef_, probe.intercept_
    weight[rows] = coef / scaler.scale_
    bias[rows] = intercept - (coef / scaler.scale_) @ scaler.mean_
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
