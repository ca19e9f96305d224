"""Recurrent and convolutional baselines on frame sequences of any length (features `frames`, `mfcc`).

Input (batch, features, frames) zero-padded to the longest utterance of the batch, with each
utterance's true length. Padding never reaches the output: LSTMs run on packed sequences and
poolings and attention are masked, so an utterance scores the same alone or in any batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError
from .registry import register_model


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(batch, size) booleans, True on each row's first ``lengths[i]`` frames."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class SequenceClassifier(nn.Module):
    """Shared checks; subclasses map (x, lengths) to a pooled vector in `encode`."""

    takes_lengths = True

    def __init__(self, num_classes: int, *, in_channels: int, num_features: int, drop_rate: float):
        super().__init__()
        self.in_channels = in_channels
        self.num_features = num_features
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ConfigError(f"input shape {tuple(x.shape)} must be (batch, {self.in_channels}, frames); "
                              "train on trees of a frame feature (frames, mfcc)")
        lengths = lengths.clamp(1, x.shape[2])
        return self.classifier(self.dropout(self.encode(x.transpose(1, 2), lengths)))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # x: (batch, frames, features)
        raise NotImplementedError

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())  # no pretraining: everything starts untrained


class LstmClassifier(SequenceClassifier):
    """Stacked LSTM; the last layer's state at each utterance's final frame is the summary."""

    def __init__(self, num_classes: int, *, in_channels: int, hidden: int = 64, layers: int = 2,
                 drop_rate: float = 0.2):
        super().__init__(num_classes, in_channels=in_channels, num_features=hidden, drop_rate=drop_rate)
        self.lstm = nn.LSTM(in_channels, hidden, num_layers=layers, batch_first=True,
                            dropout=drop_rate if layers > 1 else 0)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False))
        return h[-1]


class BiLstmAttention(SequenceClassifier):
    """Bidirectional LSTM whose frame outputs are pooled by additive attention over the valid frames."""

    def __init__(self, num_classes: int, *, in_channels: int, hidden: int = 128, layers: int = 2,
                 attention: int = 64, drop_rate: float = 0.3):
        super().__init__(num_classes, in_channels=in_channels, num_features=2 * hidden, drop_rate=drop_rate)
        self.lstm = nn.LSTM(in_channels, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=drop_rate if layers > 1 else 0)
        self.score = nn.Sequential(nn.Linear(2 * hidden, attention), nn.Tanh(), nn.Linear(attention, 1, bias=False))

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (batch, longest, 2 * hidden)
        scores = self.score(out).squeeze(2).masked_fill(~length_mask(lengths, out.shape[1]), float("-inf"))
        self.last_attention = torch.softmax(scores, dim=1)
        return torch.bmm(self.last_attention[:, None], out)[:, 0]


class FrameNorm(nn.LayerNorm):
    """Layer normalisation over channels, frame by frame: unlike batch normalisation its statistics
    never include padding, in training as in inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, channels, frames)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class Conv1dClassifier(SequenceClassifier):
    """Convolution blocks over time, then mean and max pooling over each utterance's valid frames."""

    def __init__(self, num_classes: int, *, in_channels: int, channels: tuple[int, ...] = (64, 128, 128),
                 kernel_size: int = 5, drop_rate: float = 0.3):
        super().__init__(num_classes, in_channels=in_channels, num_features=2 * channels[-1], drop_rate=drop_rate)
        blocks, width = [], in_channels
        for out in channels:
            blocks.append(nn.Sequential(nn.Conv1d(width, out, kernel_size, padding=kernel_size // 2),
                                        FrameNorm(out), nn.ReLU()))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool1d(2, ceil_mode=True)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2) * length_mask(lengths, x.shape[1])[:, None]
        for block in self.blocks:
            # Zero the padding after each block: the next convolution then reads the same zeros as its own
            # edge padding, and (values being >= 0 after ReLU) pooling ignores them, at any batch length.
            h = self.pool(block(h) * length_mask(lengths, h.shape[2])[:, None])
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")  # MaxPool1d(2, ceil_mode=True)
        valid = length_mask(lengths, h.shape[2])[:, None]
        mean = (h * valid).sum(2) / lengths[:, None]
        peak = h.masked_fill(~valid, float("-inf")).amax(2)
        return torch.cat([mean, peak], 1)


def _create(cls, name: str, num_classes: int, *, pretrained: bool, weights: str | Path | None, drop_rate: float,
            in_channels: int | None = None) -> SequenceClassifier:
    if pretrained or weights is not None:
        raise ConfigError(f"model {name!r} has no ImageNet pretraining; set model.pretrained=false")
    if in_channels is None:
        raise ConfigError(f"model {name!r} needs in_channels, the number of features per frame")
    return cls(num_classes, in_channels=in_channels, drop_rate=drop_rate)


@register_model
def lstm(num_classes: int, **kwargs) -> LstmClassifier:
    """2-layer LSTM, 64 units (the SER notebooks' model on ZCR + RMS + 13 MFCC frames)."""
    return _create(LstmClassifier, "lstm", num_classes, **kwargs)


@register_model
def bilstm_attention(num_classes: int, **kwargs) -> BiLstmAttention:
    return _create(BiLstmAttention, "bilstm_attention", num_classes, **kwargs)


@register_model
def conv1d(num_classes: int, **kwargs) -> Conv1dClassifier:
    return _create(Conv1dClassifier, "conv1d", num_classes, **kwargs)
