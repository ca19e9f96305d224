"""Domain-adversarial training (Ganin et al., JMLR 2016): a gradient-reversal branch on pooled features.

A small classifier learns to tell the domains apart (the training corpora, or speakers, plus an
optional unlabelled target corpus) from the network's pooled features; its gradient reaches the
network reversed, so the network learns features from which the domain cannot be told, while the
emotion loss keeps them useful.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ConfigError


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The identity going forward; the gradient times -`strength` going back."""
    return _ReverseGradient.apply(x, strength)


def reversal_strength(progress: float) -> float:
    """Ganin's schedule: 0 at the start of training, rising smoothly towards 1, so the domain branch
    first learns to tell domains apart before the network is pushed to hide them."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class DomainHead(nn.Module):
    """Predicts the domain of pooled features behind a gradient reversal."""

    def __init__(self, num_features: int, num_domains: int, *, hidden: int = 256, drop_rate: float = 0.3):
        super().__init__()
        if num_domains < 2:
            raise ConfigError(f"domain-adversarial training needs at least two domains, got {num_domains}; add a "
                              "training corpus, adversarial.target trees, or use adversarial.domain: speaker")
        self.layers = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(drop_rate),
                                    nn.Linear(hidden, num_domains))

    def forward(self, pooled: torch.Tensor, strength: float) -> torch.Tensor:
        return self.layers(reverse_gradient(pooled, strength))


def pooled_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A single-input ImageNet CNN's pooled features and class logits from one pass."""
    if not hasattr(model, "pooled_and_logits"):
        raise ConfigError(f"domain-adversarial training needs a single-input ImageNet CNN (pooled features), not "
                          f"{type(model).__name__}")
    return model.pooled_and_logits(x)
