"""Multi-input models: one branch per input (a registry backbone or the MFCC CNN), each pooled
to a vector; the vectors are concatenated and one classifier decides.

The published pairs: ResNet-50 on mel + VGG-16 on group delay; ResNet-50 on mel + an MFCC CNN.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .registry import MODELS, register_model


class MultiInputClassifier(nn.Module):
    """Branches keyed by input name; `forward` takes a mapping input name -> tensor."""

    def __init__(self, branches: dict[str, nn.Module], num_classes: int, *, drop_rate: float):
        super().__init__()
        self.branches = nn.ModuleDict(branches)
        self.input_names = tuple(branches)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(sum(b.num_features for b in branches.values()), num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ConfigError(f"the model reads inputs {list(self.input_names)}; missing {missing}")
        return self.classifier(self.dropout(torch.cat([self.branches[n](inputs[n]) for n in self.input_names], 1)))

    def new_parameters(self) -> list[nn.Parameter]:
        return [*self.classifier.parameters(), *(p for b in self.branches.values() for p in b.new_parameters())]


def _create(name: str, branches: dict[str, str], num_classes: int, *, pretrained: bool,
            weights: str | Path | dict[str, str] | None, drop_rate: float) -> MultiInputClassifier:
    if weights is not None and not isinstance(weights, dict):
        raise ConfigError(f"model {name!r} has one branch per input: give model.weights as "
                          f"{{{', '.join(f'{b}: PATH' for b in branches)}}}")
    weights = weights or {}
    unknown = sorted(set(weights) - set(branches))
    if unknown:
        raise ConfigError(f"model.weights names branch(es) {unknown}; {name!r} has {list(branches)}")
    built = {}
    for input_name, backbone in branches.items():
        scratch = backbone.startswith("mfcc_cnn")  # no ImageNet weights exist for these
        built[input_name] = MODELS.get(backbone)(0, pretrained=pretrained and not scratch,
                                                 weights=weights.get(input_name), drop_rate=0.1 if scratch else 0.0)
    return MultiInputClassifier(built, num_classes, drop_rate=drop_rate)


@register_model(name="resnet50_mel+vgg16_gd")
def resnet50_mel_vgg16_gd(num_classes: int, **kwargs) -> MultiInputClassifier:
    return _create("resnet50_mel+vgg16_gd", {"mel": "resnet50", "gd": "vgg16"}, num_classes, **kwargs)


@register_model(name="resnet50_mel+mfcc_cnn")
def resnet50_mel_mfcc_cnn(num_classes: int, **kwargs) -> MultiInputClassifier:
    return _create("resnet50_mel+mfcc_cnn", {"mel": "resnet50", "mfcc": "mfcc_cnn1"}, num_classes, **kwargs)


@register_model(name="tiny_fusion")
def tiny_fusion(num_classes: int, **kwargs) -> MultiInputClassifier:
    """Two tiny branches (image + MFCC): for tests and smoke runs, not for results."""
    return _create("tiny_fusion", {"mel": "tiny_efficientnet", "mfcc": "mfcc_cnn1"}, num_classes, **kwargs)
