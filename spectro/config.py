"""Typed settings: plain YAML/dict data loaded into dataclasses that reject unknown keys.

Precedence is defaults < YAML < ``--set a.b=c`` overrides. Every dataclass may define
``validate()``; it runs after loading, so a bad value fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError
from .speakers import ENCODER_THRESHOLD

T = TypeVar("T")


# --------------------------------------------------------------------------- feature settings
@dataclasses.dataclass
class AudioConfig:
    """How a recording becomes the signal that features see."""

    sample_rate: int = 16000
    trim: bool = True  # cut leading/trailing silence quieter than trim_top_db below the peak
    trim_top_db: float = 30.0
    normalise: bool = True  # scale to `peak` so recording level does not leak into features
    peak: float = 0.95
    duration: float | None = 3.0  # window length in seconds; None: one window of the whole utterance
    hop: float | None = None  # seconds between window starts in longer recordings; None: duration / 2
    align: Literal["center", "start"] = "center"  # where a shorter signal sits in its zero-padded window

    def validate(self) -> None:
        _require(self.sample_rate > 0, "audio.sample_rate", self.sample_rate, "must be positive")
        _require(self.trim_top_db > 0, "audio.trim_top_db", self.trim_top_db, "must be positive")
        _require(0 < self.peak <= 1, "audio.peak", self.peak, "must be in (0, 1]")
        _require(self.duration is None or self.duration > 0, "audio.duration", self.duration,
                 "must be positive or null")
        _require(self.hop is None or (self.duration is not None and 0 < self.hop <= self.duration), "audio.hop",
                 self.hop, f"must be in (0, duration={self.duration}] or null (and null when duration is null)")

    @property
    def window_hop(self) -> float | None:
        """Seconds between window starts (None with whole-utterance windows)."""
        return None if self.duration is None else self.hop or self.duration / 2


@dataclasses.dataclass
class SpectrogramConfig:
    """Short-time analysis and mel scale, named as librosa names them."""

    n_fft: int = 1024
    hop_length: int = 160  # 10 ms at 16 kHz
    win_length: int | None = 400  # 25 ms at 16 kHz
    n_mels: int = 128
    fmin: float = 20.0
    fmax: float | None = None  # None = sample_rate / 2
    top_db: float = 80.0  # dynamic range kept below each utterance's maximum
    n_mfcc: int = 40

    def validate(self) -> None:
        for name in ("n_fft", "hop_length", "n_mels", "n_mfcc"):
            value = getattr(self, name)
            _require(value > 0, f"spectrogram.{name}", value, "must be a positive integer")
        _require(self.win_length is None or 0 < self.win_length <= self.n_fft, "spectrogram.win_length",
                 self.win_length, f"must be in (0, n_fft={self.n_fft}] or null")
        _require(self.fmin >= 0, "spectrogram.fmin", self.fmin, "must be >= 0")
        _require(self.fmax is None or self.fmax > self.fmin, "spectrogram.fmax", self.fmax,
                 f"must exceed fmin={self.fmin} or be null")
        _require(self.top_db > 0, "spectrogram.top_db", self.top_db, "must be positive")
        _require(self.n_mfcc <= self.n_mels, "spectrogram.n_mfcc", self.n_mfcc,
                 f"must not exceed n_mels={self.n_mels}")


@dataclasses.dataclass
class GroupDelayConfig:
    """Modified group delay (Hegde, Murthy & Gadde 2007); frames share spectrogram.hop_length with mel."""

    n_fft: int = 512
    win_length: int = 400  # 25 ms Hamming frames at 16 kHz
    alpha: float = 0.4
    gamma: float = 0.9
    lifter: int = 8
    preemphasis: float = 0.97

    def validate(self) -> None:
        _require(0 < self.win_length <= self.n_fft, "group_delay.win_length", self.win_length,
                 f"must be in (0, n_fft={self.n_fft}]")
        for name in ("alpha", "gamma"):
            _require(0 < getattr(self, name) <= 1, f"group_delay.{name}", getattr(self, name), "must be in (0, 1]")
        _require(1 <= self.lifter <= self.n_fft // 2, "group_delay.lifter", self.lifter, "must be in [1, n_fft/2]")
        _require(0 <= self.preemphasis < 1, "group_delay.preemphasis", self.preemphasis, "must be in [0, 1)")


@dataclasses.dataclass
class DescriptorConfig:
    """Hand-crafted descriptors of the baselines: features ``stats`` and ``frames``."""

    std: bool = False  # stats: append standard deviations over frames to the means
    frame_mfcc: int = 13  # frames: MFCCs per frame, beside ZCR and RMS

    def validate(self) -> None:
        _require(self.frame_mfcc > 0, "descriptors.frame_mfcc", self.frame_mfcc, "must be a positive integer")


@dataclasses.dataclass
class ImageConfig:
    """How a feature matrix becomes the RGB picture an ImageNet CNN expects."""

    size: int = 224
    channels: Literal["colormap", "grey", "deltas"] = "deltas"  # chosen on validation UAR, see README
    colormap: str = "viridis"  # any matplotlib colour map; used when channels = colormap

    def validate(self) -> None:
        _require(self.size >= 16, "image.size", self.size, "must be at least 16 pixels")
        if self.channels == "colormap":
            import matplotlib

            _require(self.colormap in matplotlib.colormaps, "image.colormap", self.colormap,
                     "must name a matplotlib colour map")


@dataclasses.dataclass
class NormaliseConfig:
    """Domain normalisation (``spectro.normalise``): standardise each band of the feature over a group
    of recordings before the picture is made; for a test corpus, with its own unlabelled audio."""

    mode: Literal["none", "utterance", "speaker", "corpus"] = "none"
    unknown_speakers: Literal["corpus", "clusters", "encoder"] = "corpus"  # for corpora without speaker labels
    clusters: int = 10  # groups found without labels, with unknown_speakers: clusters
    encoder_threshold: float = ENCODER_THRESHOLD  # unknown_speakers: encoder; cosine distance that cuts clusters
    # With mode speaker: where a corpus's groups hold more of the band-mean variance than balanced speakers do
    # (spectro.normalise.guarded), they probably each carry one emotion; fallback gives that corpus corpus
    # statistics. Judged against the training corpora's speakers (guard_reference) it changes nothing for
    # balanced corpora (RAVDESS, TESS, EMO-DB), so it is on by default; judged alone, EMO-DB's log-mel fires it.
    guard: Literal["fallback", "none"] = "fallback"
    guard_threshold: float | None = None  # None: from guard_reference, else the one calibrated for the feature
    # The training corpora's value; evaluate and predict set it from the model, crosscorpus.sh from the training
    # trees. Left out of comparisons: it only decides whether the guard fires, which normalisation.json records,
    # so a test tree made with it is still a tree made with the training settings.
    guard_reference: float | None = dataclasses.field(default=None, compare=False)
    range_sd: float = 3.0  # pictures: mean -/+ range_sd standard deviations span black to white

    def validate(self) -> None:
        _require(self.clusters >= 2, "normalise.clusters", self.clusters, "must be at least 2")
        _require(0 < self.encoder_threshold < 2, "normalise.encoder_threshold", self.encoder_threshold,
                 "must lie between 0 and 2 (a cosine distance)")
        _require(self.guard_threshold is None or -1 < self.guard_threshold < 1, "normalise.guard_threshold",
                 self.guard_threshold, "must lie between -1 and 1 (an intraclass correlation)")
        _require(self.guard_reference is None or -1 < self.guard_reference < 1, "normalise.guard_reference",
                 self.guard_reference, "must lie between -1 and 1 (an intraclass correlation)")
        _require(self.range_sd > 0, "normalise.range_sd", self.range_sd, "must be positive")

    @property
    def grouped(self) -> bool:
        """Whether a recording's statistics pool a group of recordings (its speaker's or its corpus's), so that
        which recordings are rendered together changes the pictures."""
        return self.mode in ("speaker", "corpus")


@dataclasses.dataclass
class QualityConfig:
    """Checks on each recording's speech (what is left after trimming silence) before it is used.

    The defaults keep every file of RAVDESS, TESS and EMO-DB (shortest speech 1.04 s, quietest
    -62 dBFS, largest offset 0.04 of the RMS) and catch clips, near-silence and DC.
    """

    min_seconds: float = 0.25
    silence_db: float = -70.0  # RMS below this many dB under full scale: near-silent
    max_dc: float = 0.5  # |mean| / RMS above this: mostly a constant offset, not sound
    action: Literal["warn", "reject"] = "warn"  # reject: such files go to rejected.csv instead of the tree

    def validate(self) -> None:
        _require(self.min_seconds >= 0, "quality.min_seconds", self.min_seconds, "must be >= 0")
        _require(self.silence_db < 0, "quality.silence_db", self.silence_db, "must be negative (dB below full scale)")
        _require(self.max_dc > 0, "quality.max_dc", self.max_dc, "must be positive")


@dataclasses.dataclass
class FeatureConfig:
    """Everything that decides what an image looks like; saved with every image tree and checkpoint."""

    feature: str = "mel"
    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    spectrogram: SpectrogramConfig = dataclasses.field(default_factory=SpectrogramConfig)
    group_delay: GroupDelayConfig = dataclasses.field(default_factory=GroupDelayConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
    descriptors: DescriptorConfig = dataclasses.field(default_factory=DescriptorConfig)
    quality: QualityConfig = dataclasses.field(default_factory=QualityConfig)
    normalise: NormaliseConfig = dataclasses.field(default_factory=NormaliseConfig)

    def validate(self) -> None:
        from .features import feature_kind, list_features

        _require(self.feature in list_features(), "feature", self.feature, f"must be one of {list_features()}")
        _require(not (feature_kind(self.feature) == "vector" and self.normalise.mode == "utterance"), "normalise.mode",
                 self.normalise.mode, f"cannot standardise the one {self.feature} vector of a window over itself; use "
                 "speaker or corpus")
        _require(self.descriptors.frame_mfcc <= self.spectrogram.n_mels, "descriptors.frame_mfcc",
                 self.descriptors.frame_mfcc, f"must not exceed spectrogram.n_mels={self.spectrogram.n_mels}")
        fmax = self.spectrogram.fmax
        _require(fmax is None or fmax <= self.audio.sample_rate / 2, "spectrogram.fmax", fmax,
                 f"must not exceed sample_rate/2={self.audio.sample_rate / 2}")


@dataclasses.dataclass
class WaveformAugmentConfig:
    """Random changes to training recordings, rendered as extra copies (`spectro images --augment`).

    Each transform fires with its own probability; ranges are drawn uniformly. They act after
    silence trimming and peak normalisation and before the fixed-length crop.
    """

    copies: int = 1  # augmented copies per recording
    seed: int = 0
    noise_p: float = 0.5  # additive white noise ...
    snr_db: tuple[float, float] = (10.0, 30.0)  # ... at a signal-to-noise ratio in this range
    pitch_p: float = 0.3
    semitones: tuple[float, float] = (-2.0, 2.0)
    stretch_p: float = 0.3
    rate: tuple[float, float] = (0.85, 1.15)  # > 1 is faster
    gain_p: float = 0.3
    gain_db: tuple[float, float] = (-6.0, 6.0)
    trim_p: float = 0.3
    trim_max: float = 0.1  # largest fraction cut from each end
    # acoustic domain randomisation (off by default, so that trees made before keep their meaning)
    speed_p: float = 0.0  # speed perturbation: tempo and pitch together, as played faster or slower ...
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)  # ... by one of these factors
    reverb_p: float = 0.0  # a simulated room: a generated impulse response ...
    rt60: tuple[float, float] = (0.2, 0.8)  # ... whose reverberation time (s) is drawn from this range
    channel_p: float = 0.0  # a band-limited channel: half the time a telephone (300-3400 Hz, 8-bit mu-law) ...
    bandwidth_hz: tuple[float, float] = (2500.0, 7000.0)  # ... else a low-pass at a cutoff drawn from this range

    def validate(self) -> None:
        _require(self.copies > 0, "augment.copies", self.copies, "must be a positive integer")
        for name in ("noise_p", "pitch_p", "stretch_p", "gain_p", "trim_p", "speed_p", "reverb_p", "channel_p"):
            _require(0 <= getattr(self, name) <= 1, f"augment.{name}", getattr(self, name), "must be in [0, 1]")
        _require(bool(self.speeds) and min(self.speeds) > 0, "augment.speeds", list(self.speeds),
                 "must list positive factors")
        _require(0 < self.rt60[0], "augment.rt60", list(self.rt60), "must be positive seconds")
        for name in ("snr_db", "semitones", "rate", "gain_db", "rt60", "bandwidth_hz"):
            low, high = getattr(self, name)
            _require(low <= high, f"augment.{name}", [low, high], "must be [low, high] with low <= high")
        _require(self.rate[0] > 0, "augment.rate", list(self.rate), "must be positive")
        _require(0 <= self.trim_max < 0.5, "augment.trim_max", self.trim_max, "must be in [0, 0.5)")


# --------------------------------------------------------------------------- loading machinery
def _require(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} {rule}")


def from_dict(cls: type[T], data: dict | None, *, prefix: str = "") -> T:
    """Build dataclass `cls` from plain data, rejecting unknown keys and wrong types."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]!s}; valid keys here: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    obj = cls(**kwargs)
    _validate_tree(obj)
    return obj


def _validate_tree(obj: Any) -> None:
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            _validate_tree(value)
    if hasattr(obj, "validate"):
        obj.validate()


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=f"{name}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}={value!r} must be {_describe(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} must be one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list")
        if origin is tuple and Ellipsis not in args and len(value) != len(args):
            raise ConfigError(f"{name}={value!r} must be a list of {len(args)}")
        return origin(_coerce(args[0], item, f"{name}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} must be a mapping")
        return {str(k): _coerce(args[1], v, f"{name}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{name}={value!r} must be {_describe(hint)}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def to_dict(obj: Any) -> dict:
    """Plain, JSON/YAML-safe data for a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of `data` with each ``a.b=value`` applied; values are parsed as YAML."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = parse_yaml(raw, f"--set {item!r}")
    return data


MAX_YAML_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000  # after aliases are expanded: far beyond any config, far below a "billion laughs"


def parse_yaml(text: str, source: str):
    """Plain data from YAML text, or a ConfigError naming `source`: no Python tags (safe loading), and no
    file that aliases (``*name``) expand beyond MAX_YAML_VALUES values, which could take all memory."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is {len(text)} bytes; a config is at most {MAX_YAML_BYTES}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{source} expands to more than {MAX_YAML_VALUES} values through its aliases (*name); "
                              "no config needs that many, so it is refused")
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{source} uses the YAML tag {error.problem.rsplit(' ', 1)[-1]}, which spectro never "
                          "loads: a config holds plain values (text, numbers, lists, mappings)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise ConfigError(f"{source} nests too deeply to be a config") from None


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under `node` once every alias is expanded, counted without expanding them (each node once)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes[id(node)] = 0  # an alias cycle counts as nothing more
        sizes[id(node)] = 1 + sum(min(_expanded_size(child, sizes), MAX_YAML_VALUES + 1) for child in children)
    return sizes[id(node)]


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        from .fileio import describe_path

        raise ConfigError(f"config file {describe_path(path)} does not exist")
    data = parse_yaml(path.read_text(), f"config file {str(path)!r}")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data or {}


# --------------------------------------------------------------------------- experiment settings
@dataclasses.dataclass
class DataConfig:
    """Which image trees to learn from and test on (trees made by `spectro images`)."""

    # Each entry is one corpus: an image tree, or for multi-input models {input: tree, ...}.
    train: list[str | dict[str, str]] = dataclasses.field(default_factory=list)
    test: dict[str, str | dict[str, str]] = dataclasses.field(default_factory=dict)  # scored after training
    classes: int | list[str] = 4  # a numbered setup (4, 5, 6, 7, 8) or a list of class names, e.g. with boredom
    val_speakers: list[str] = dataclasses.field(default_factory=list)  # empty: draw val_fraction per corpus
    val_fraction: float = 0.2
    missing_train: Literal["error", "skip"] = "error"  # skip: train on whichever listed trees exist
    # trees of augmented copies (`spectro images --augment`), entries as in `train`; only the copies of
    # recordings that land in the training split are used, never those of validation speakers
    train_augmented: list[str | dict[str, str]] = dataclasses.field(default_factory=list)
    # leave-one-corpus-out selection: validate on every recording of this training corpus (and train on
    # the others), so epochs and settings are chosen by how well they carry to a corpus never trained on
    val_corpus: str | None = None
    # self-training (transductive): [{tree: TREE, labels: CSV}], recordings of an unlabelled corpus (a tree
    # made with the training settings) with the pseudo-labels `spectro pseudo-label` wrote; their own labels
    # are never read
    pseudo: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        from .corpora import class_names

        _require(bool(self.train), "data.train", self.train, "must list at least one image tree")
        try:
            class_names(self.classes)
        except ConfigError as error:
            raise ConfigError(f"data.{error}") from None
        _require(0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction, "must be in (0, 1)")
        _require(not (self.val_corpus and self.val_speakers), "data.val_corpus", self.val_corpus,
                 "and data.val_speakers cannot both choose the validation data")
        for entry in self.pseudo:
            _require(sorted(entry) == ["labels", "tree"], "data.pseudo", entry,
                     "entries must be {tree: TREE, labels: CSV from spectro pseudo-label}")


@dataclasses.dataclass
class LabelConfig:
    """Relabelling before classes are chosen, e.g. valence: {happy: positive, angry: negative, sad: negative}.

    Applied wherever an experiment reads labels (training and test trees, and `spectro evaluate`,
    which reads it from the checkpoint); labels it does not name keep their own name.
    """

    map: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        from .corpora import check_label

        for source, target in self.map.items():
            check_label(source, what="labels.map key")
            check_label(target, what=f"labels.map.{source}")


@dataclasses.dataclass
class ModelConfig:
    name: str = "efficientnet_lite0"
    pretrained: bool = True
    # a torchvision/timm state dict, for machines without internet; multi-input models: {branch: path}
    weights: str | dict[str, str] | None = None
    drop_rate: float = 0.2
    # scikit-learn baselines only: pipeline parameters (e.g. {clf__C: 10}), and a grid search over the
    # model's own grid, each candidate fitted on the training split and scored by validation UAR
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    search: bool = False

    def validate(self) -> None:
        from .models import list_models

        _require(self.name in list_models(), "model.name", self.name, f"must be one of {list_models()}")
        _require(0 <= self.drop_rate < 1, "model.drop_rate", self.drop_rate, "must be in [0, 1)")


@dataclasses.dataclass
class OptimConfig:
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3  # the classifier's; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.1
    weight_decay: float = 0.01
    momentum: float = 0.9  # sgd only
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_epochs: float = 0.5
    plateau_patience: int = 2
    plateau_factor: float = 0.5

    def validate(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "must be positive")
        _require(0 <= self.backbone_lr_scale <= 1, "optim.backbone_lr_scale", self.backbone_lr_scale,
                 "must be in [0, 1]")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _require(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "must be >= 0")
        _require(0 < self.plateau_factor < 1, "optim.plateau_factor", self.plateau_factor, "must be in (0, 1)")


@dataclasses.dataclass
class AugmentConfig:
    """SpecAugment-style masks, and vocal-tract-length perturbation, on training pictures; never applied to
    validation or test data."""

    time_masks: int = 2
    time_mask_width: float = 0.1  # fraction of the image width
    freq_masks: int = 2
    freq_mask_width: float = 0.1
    vtlp_p: float = 0.0  # VTLP (Jaitly & Hinton 2013): each picture's frequency axis warped by a factor ...
    vtlp_alpha: tuple[float, float] = (0.9, 1.1)  # ... drawn from this range

    def validate(self) -> None:
        _require(0 <= self.vtlp_p <= 1, "augment.vtlp_p", self.vtlp_p, "must be in [0, 1]")
        _require(0 < self.vtlp_alpha[0] <= self.vtlp_alpha[1], "augment.vtlp_alpha", list(self.vtlp_alpha),
                 "must be [low, high] with 0 < low <= high")
        for name in ("time_mask_width", "freq_mask_width"):
            _require(0 <= getattr(self, name) <= 1, f"augment.{name}", getattr(self, name), "must be in [0, 1]")
        for name in ("time_masks", "freq_masks"):
            _require(getattr(self, name) >= 0, f"augment.{name}", getattr(self, name), "must be >= 0")


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    freeze_epochs: int = 1  # train only the new classifier first, then unfreeze the backbone
    # LP-FT: fit the classifier to convergence on frozen features first (a logistic regression), then
    # fine-tune the whole network, the classifier too, at optim.lr * optim.backbone_lr_scale; no freeze epochs
    lp_ft: bool = False
    label_smoothing: float = 0.1
    # loss: class-weighted loss; sampler: classes drawn equally often; corpus: every (corpus, class)
    # pair drawn equally often, so a large or easy corpus does not dominate; none: as the data come
    class_balance: Literal["loss", "sampler", "corpus", "none"] = "corpus"  # see README, Results
    early_stopping_patience: int = 4  # epochs without a better validation UAR; 0 disables
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # autocast in training, validation and prediction: auto is fp16 (with a gradient scaler) on CUDA, fp32 elsewhere
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (worth it for long GPU runs)
    cudnn_benchmark: bool = True  # CUDA only: let cuDNN pick the fastest kernels for the fixed input size
    accumulate: int = 1  # optimiser step every N batches of batch_size (a larger effective batch)
    workers: int = 2  # loader processes reading batches from the packed trees; 0: in the training process
    log_every: int = 20  # steps between progress and loss updates (each reads the loss back from the device)
    recovery_minutes: float = 0.0  # also save last.pt mid-epoch this often (0: only at epoch ends and on signals)
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) mixing of inputs and targets; 0: off
    ema: float = 0.0  # decay of an exponential moving average of the weights, which validation and
    # checkpoints then use; 0: off (e.g. 0.999)

    def validate(self) -> None:
        _require(self.epochs > 0, "train.epochs", self.epochs, "must be positive")
        _require(self.batch_size > 0, "train.batch_size", self.batch_size, "must be positive")
        _require(0 <= self.freeze_epochs, "train.freeze_epochs", self.freeze_epochs, "must be >= 0")
        _require(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _require(self.early_stopping_patience >= 0, "train.early_stopping_patience", self.early_stopping_patience,
                 "must be >= 0")
        _require(self.mixup >= 0, "train.mixup", self.mixup, "must be >= 0 (0 turns mixup off)")
        _require(self.accumulate >= 1, "train.accumulate", self.accumulate, "must be a positive integer")
        _require(self.workers >= 0, "train.workers", self.workers, "must be >= 0")
        _require(self.log_every >= 1, "train.log_every", self.log_every, "must be a positive integer")
        _require(self.recovery_minutes >= 0, "train.recovery_minutes", self.recovery_minutes, "must be >= 0")
        _require(0 <= self.ema < 1, "train.ema", self.ema, "must be in [0, 1) (0 turns the average off)")


@dataclasses.dataclass
class AdversarialConfig:
    """Domain-adversarial training (Ganin et al. 2016): a gradient-reversal branch learns to tell the
    domains (training corpora, or speakers) apart from the pooled features, and the network learns to
    make that impossible. `target` trees add unlabelled recordings of a corpus to be tested on: their
    labels are never read, but their use is transductive, and the checkpoint records it."""

    weight: float = 0.0  # of the domain loss; 0: off
    domain: Literal["corpus", "speaker"] = "corpus"
    target: list[str] = dataclasses.field(default_factory=list)  # image trees of unlabelled target audio
    hidden: int = 256

    def validate(self) -> None:
        _require(self.weight >= 0, "adversarial.weight", self.weight, "must be >= 0 (0 turns it off)")
        _require(self.hidden > 0, "adversarial.hidden", self.hidden, "must be positive")


RUN_NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclasses.dataclass
class RunConfig:
    name: str = ""  # default: the config file's name
    checkpoint_dir: str = "checkpoints"
    log_dir: str = "runs"

    def validate(self) -> None:
        _require(self.name == "" or (RUN_NAME_RULE.fullmatch(self.name) is not None and ".." not in self.name),
                 "run.name", self.name, "must be one folder name: letters, digits, '.', '_', '+' and '-', starting "
                 "with a letter or digit (no '/' or '..'), so that the run stays inside run.checkpoint_dir and "
                 "run.log_dir")


@dataclasses.dataclass
class ExperimentConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    labels: LabelConfig = dataclasses.field(default_factory=LabelConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    adversarial: AdversarialConfig = dataclasses.field(default_factory=AdversarialConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


def _deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, mappings merged key by key; an empty mapping (``test: {}``) clears the base's."""
    merged = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and value and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if nested else value
    return merged


def load_config_file(path: str | Path, _seen: tuple = ()) -> dict:
    """A YAML config with its ``extends: other.yaml`` chain (relative to the file) merged underneath."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config {str(path)!r} extends itself through {[str(p) for p in _seen]}")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"extends={parent!r} in {str(path)!r} must be a file name")
    return _deep_merge(load_config_file(path.parent / parent, (*_seen, path)), data)


def load_experiment(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Defaults < YAML file (after what it extends) < ``--set`` overrides; the run is named after the file."""
    data = apply_overrides(load_config_file(path), list(overrides))
    run = data.setdefault("run", {})
    if isinstance(run, dict):
        run.setdefault("name", re.sub(r"[^A-Za-z0-9._+-]+", "_", Path(path).stem).strip("._") or "run")
    return from_dict(ExperimentConfig, data)
