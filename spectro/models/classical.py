"""Classical baselines from scikit-learn on utterance statistics (feature `stats`).

Each model is a `Pipeline` (standard scaling, then the classifier) behind the torch model
interface, so training, checkpoints, evaluation and prediction treat it like any network:
`forward` returns log-probabilities (softmax gives back ``predict_proba``), and the fitted
pipeline travels in the state dict as skops bytes, which load without unpickling arbitrary code and
only with the types spectro's pipelines hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from .registry import register_model

# Beyond the types skops trusts by default, exactly what spectro's own pipelines hold once fitted
# (probability calibration, the MLP's optimiser, tree nodes); anything else in a checkpoint is refused.
TRUSTED_TYPES = frozenset({
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
})


class EstimatorClassifier(nn.Module):
    """A scikit-learn pipeline fitted by `fit`, not by gradient descent."""

    is_estimator = True

    def __init__(self, pipeline, num_classes: int, *, search_space: dict[str, list[Any]]):
        super().__init__()
        self.pipeline = pipeline
        self.num_classes = num_classes
        self.search_space = search_space  # the grid `model.search` tries, scored on validation speakers
        self.fitted = False

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> EstimatorClassifier:
        params = {} if sample_weight is None else {"clf__sample_weight": sample_weight}
        self.pipeline.fit(X, y, **params)
        self.fitted = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise ConfigError("this scikit-learn model has not been fitted")
        X = x.detach().reshape(len(x), -1).double().cpu().numpy()
        proba = np.zeros((len(X), self.num_classes))
        proba[:, self.pipeline.classes_] = self.pipeline.predict_proba(X)  # classes absent in training stay 0
        return torch.from_numpy(proba).float().clamp_min(1e-12).log().to(x.device)

    def new_parameters(self) -> list[nn.Parameter]:
        return []

    def get_extra_state(self) -> dict:
        import skops.io

        return {"pipeline": skops.io.dumps(self.pipeline) if self.fitted else b""}

    def set_extra_state(self, state: dict) -> None:
        if state["pipeline"]:
            self.pipeline, self.fitted = load_pipeline(state["pipeline"]), True


def load_pipeline(blob: bytes):
    """A pipeline saved by skops, refusing any type that spectro's own pipelines do not hold."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=blob)
    foreign = sorted(set(untrusted) - TRUSTED_TYPES)
    if foreign:
        raise DataError(f"the saved pipeline holds types that spectro never saves: {foreign}; refusing to load it")
    return skops.io.loads(blob, trusted=untrusted)


def _create(name: str, build: Callable[[], Any], search_space: dict[str, list[Any]], num_classes: int, *,
            pretrained: bool, weights: str | Path | None, drop_rate: float, in_channels: int | None = None
            ) -> EstimatorClassifier:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if pretrained or weights is not None:
        raise ConfigError(f"model {name!r} is a scikit-learn baseline without pretraining; set model.pretrained=false")
    return EstimatorClassifier(Pipeline([("scale", StandardScaler()), ("clf", build())]), num_classes,
                               search_space=search_space)


def _random_forest():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=300, n_jobs=-1)


def _mlp():
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(256, 128), alpha=1e-3, max_iter=500, early_stopping=True)


@register_model
def lda(num_classes: int, **kwargs) -> EstimatorClassifier:
    """Linear discriminant analysis with Ledoit-Wolf shrinkage (184 correlated descriptors)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return _create("lda", lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
                   {"clf__shrinkage": ["auto", 0.01, 0.1, 0.5]}, num_classes, **kwargs)


@register_model
def logistic_regression(num_classes: int, **kwargs) -> EstimatorClassifier:
    from sklearn.linear_model import LogisticRegression

    return _create("logistic_regression", lambda: LogisticRegression(C=1.0, max_iter=3000),
                   {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0]}, num_classes, **kwargs)


@register_model
def random_forest(num_classes: int, **kwargs) -> EstimatorClassifier:
    return _create("random_forest", _random_forest,
                   {"clf__max_features": ["sqrt", 0.3], "clf__min_samples_leaf": [1, 5]}, num_classes, **kwargs)


@register_model
def svm(num_classes: int, **kwargs) -> EstimatorClassifier:
    """RBF support vector machine with sigmoid-calibrated (Platt) probabilities."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    return _create("svm", lambda: CalibratedClassifierCV(SVC(C=1.0, kernel="rbf"), ensemble=False),
                   {"clf__estimator__C": [0.1, 1.0, 10.0, 100.0], "clf__estimator__gamma": ["scale", 0.001, 0.01]},
                   num_classes, **kwargs)


@register_model
def mlp(num_classes: int, **kwargs) -> EstimatorClassifier:
    return _create("mlp", _mlp, {"clf__alpha": [1e-4, 1e-3, 1e-2, 1e-1]}, num_classes, **kwargs)


@register_model
def rf_mlp_ensemble(num_classes: int, **kwargs) -> EstimatorClassifier:
    """Soft voting (averaged probabilities) of the random forest and the MLP."""
    from sklearn.ensemble import VotingClassifier

    return _create("rf_mlp_ensemble",
                   lambda: VotingClassifier([("rf", _random_forest()), ("mlp", _mlp())], voting="soft"),
                   {"clf__mlp__alpha": [1e-3, 1e-2, 1e-1]}, num_classes, **kwargs)
