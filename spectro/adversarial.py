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


class DomainBranch:
    """The domain side of a run: each training window's domain (its corpus or speaker), the unlabelled
    windows of any target corpora (one more domain, whose labels are never read), and the head."""

    def __init__(self, config, train, features, model: nn.Module, device: torch.device, *, progress: bool = True):
        from .data import ImageSet
        from .image_tree import read_feature_settings, read_image_manifest

        adv = config.adversarial
        if config.train.mixup:
            raise ConfigError("train.mixup and adversarial training cannot be combined (mixed windows have no one "
                              "domain)")
        utterances = [train.utterances[i] for i in train.owner.tolist()]
        keys = [u.corpus if adv.domain == "corpus" else u.speaker for u in utterances]
        names = sorted(set(keys))
        self.labels = torch.tensor([names.index(k) for k in keys])
        self.target, self.transductive = None, []
        if adv.target:
            rows = [row for tree in adv.target for row in read_image_manifest(tree)]
            if any(read_feature_settings(tree) != features for tree in adv.target):
                raise ConfigError("adversarial.target trees were made with other feature settings than the training "
                                  "images; render them with the same settings")
            self.target = ImageSet([p for p, _ in rows], [u for _, u in rows], None, desc="target images",
                                   progress=progress)
            corpora = sorted({u.corpus for _, u in rows})
            self.transductive = [f"domain-adversarial training with the unlabelled audio of {', '.join(corpora)}"]
        self.head = DomainHead(model.num_features, len(names) + bool(adv.target), hidden=adv.hidden).to(device)
        self.weight, self.device = adv.weight, device

    def loss(self, model: nn.Module, x: torch.Tensor, windows: torch.Tensor, *, progress: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion logits of the batch, and the weighted domain loss over it and as many target windows."""
        from .data import SINGLE_INPUT, as_model_input

        pooled, logits = pooled_and_logits(model, x)
        domains = self.labels[windows].to(self.device)
        if self.target is not None:
            picks = torch.randint(0, self.target.n_windows, (len(x),), generator=generator)
            stored, _, _ = self.target.stored(picks)
            target_pooled, _ = pooled_and_logits(model, as_model_input(stored[SINGLE_INPUT].to(self.device)))
            pooled = torch.cat([pooled, target_pooled])
            domains = torch.cat([domains, torch.full((len(picks),), self.head.layers[-1].out_features - 1,
                                                     device=self.device)])
        domain_logits = self.head(pooled.float(), reversal_strength(progress))
        return logits, self.weight * nn.functional.cross_entropy(domain_logits, domains)
