"""Typed configuration for one run: model, data, training and measurement.

Every section is a frozen dataclass. ``from_dict`` rejects unknown keys and lists the known
ones, so a typo in a study or sweep file fails before any work starts. The resolved config
(``to_dict``) is written next to every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "DataConfig",
    "MeasureConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration value or key; the message lists what is allowed."""


ACTIVATIONS = ("relu", "tanh", "identity")
INITS = ("he", "glorot", "lecun", "orthogonal", "gaussian")
MODEL_KINDS = ("mlp", "cnn")
DATASETS = ("digits", "mnist1d", "sphere", "mnist", "fashion-mnist", "cifar10", "cifar100")
GRANULARITIES = ("example", "minibatch")
PAIRINGS = ("disjoint", "all")
BATCHNORM_MODES = ("eval", "train")
LOSS_REDUCTIONS = ("mean", "sum")


def _check_choice(section: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{section}.{name}={value!r} is not supported; allowed values: "
            f"{', '.join(allowed)}. Pick one of them."
        )


def _check_min(section: str, name: str, value: Any, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(
            f"{section}.{name}={value!r} is invalid; it must be at least {minimum}."
        )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and initialization of the network.

    ``width`` and ``depth`` count hidden units and hidden layers for an MLP. For the CNN
    (a Wide-ResNet layout without batch norm or skips by default) ``depth`` is the
    Wide-ResNet depth β (β − 4 divisible by 6) and ``width`` the width factor ℓ.
    """

    kind: str = "mlp"
    width: int = 64
    depth: int = 2
    activation: str = "relu"
    init: str = "he"
    # Variance 1/(kappa * fan_in) for init="gaussian", the scaling used in the theory.
    kappa: float = 1.0
    batchnorm: bool = False
    skip: bool = False
    bias: bool = True

    def __post_init__(self) -> None:
        _check_choice("model", "kind", self.kind, MODEL_KINDS)
        _check_choice("model", "activation", self.activation, ACTIVATIONS)
        _check_choice("model", "init", self.init, INITS)
        _check_min("model", "width", self.width, 1)
        _check_min("model", "depth", self.depth, 1)
        if not self.kappa > 0:
            raise ConfigError(f"model.kappa={self.kappa!r} is invalid; it must be > 0.")
        if self.kind == "cnn" and (self.depth < 10 or (self.depth - 4) % 6 != 0):
            raise ConfigError(
                f"model.depth={self.depth} is invalid for kind='cnn'; the Wide-ResNet layout "
                "needs depth = 6n + 4 with n >= 1 (10, 16, 22, 28, ...)."
            )


@dataclass(frozen=True)
class DataConfig:
    """Dataset choice and its split.

    ``root`` is the directory holding MNIST, Fashion-MNIST or CIFAR files; the bundled
    digits, MNIST-1D and the synthetic sphere data need none.
    """

    name: str = "digits"
    root: str | None = None
    # Seed of the train/test split and of generated data (independent of the run seed).
    split_seed: int = 0
    test_fraction: float = 0.2
    # Keep only the first N training examples after shuffling (None keeps all).
    max_train: int | None = None
    # Synthetic sphere data: number of examples and input dimension.
    num_examples: int = 512
    input_dim: int = 10
    augment: bool = False
    download: bool = False

    def __post_init__(self) -> None:
        _check_choice("data", "name", self.name, DATASETS)
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(
                f"data.test_fraction={self.test_fraction!r} is invalid; it must lie in (0, 1)."
            )
        if self.max_train is not None:
            _check_min("data", "max_train", self.max_train, 2)
        _check_min("data", "num_examples", self.num_examples, 2)
        _check_min("data", "split_seed", self.split_seed, 0)
        _check_min("data", "input_dim", self.input_dim, 1)


@dataclass(frozen=True)
class TrainConfig:
    """Plain SGD with step decay: the learning rate is divided by ``lr_decay_factor`` at
    each fraction of ``epochs`` in ``lr_decay_at`` (0.4 and 0.8 by default)."""

    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 128
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_decay_at: tuple[float, ...] = (0.4, 0.8)
    lr_decay_factor: float = 10.0
    # Epochs after which confusion is measured; 0 is initialization. None measures every epoch.
    measure_epochs: tuple[int, ...] | None = None
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        _check_min("train", "epochs", self.epochs, 0)
        _check_min("train", "batch_size", self.batch_size, 1)
        if not self.lr > 0:
            raise ConfigError(f"train.lr={self.lr!r} is invalid; it must be > 0.")
        _check_min("train", "momentum", self.momentum, 0.0)
        _check_min("train", "weight_decay", self.weight_decay, 0.0)
        _check_choice("train", "loss", self.loss, ("cross_entropy", "mse"))
        for fraction in self.lr_decay_at:
            if not 0.0 < fraction < 1.0:
                raise ConfigError(
                    f"train.lr_decay_at contains {fraction!r}; each entry is a fraction of the "
                    "epochs in (0, 1)."
                )
        if self.measure_epochs is not None:
            for epoch in self.measure_epochs:
                if not 0 <= epoch <= self.epochs:
                    raise ConfigError(
                        f"train.measure_epochs contains {epoch!r}; entries must lie in "
                        f"0..{self.epochs} (0 is initialization)."
                    )

    def epochs_to_measure(self) -> tuple[int, ...]:
        """Return the sorted epochs after which confusion is measured (0 = initialization)."""
        if self.measure_epochs is None:
            return tuple(range(self.epochs + 1))
        return tuple(sorted(set(self.measure_epochs)))


@dataclass(frozen=True)
class MeasureConfig:
    """How gradients are sampled and paired for a confusion measurement.

    ``granularity="minibatch"`` follows the protocol of Sankararaman et al. (ICML 2020): each gradient is the mean-loss
    gradient of a random mini-batch of ``batch_size`` examples. ``"example"`` uses
    per-example gradients (the definition of the confusion bound). ``pairing="disjoint"``
    draws ``num_pairs`` independent pairs; ``"all"`` takes all pairs among
    ``num_gradients`` gradients.
    """

    granularity: str = "minibatch"
    pairing: str = "disjoint"
    num_pairs: int = 100
    num_gradients: int = 64
    batch_size: int = 128
    # BatchNorm during measurement: "train" uses each mini-batch's statistics (only with
    # granularity="minibatch"); "eval" uses the running statistics.
    batchnorm: str = "train"
    engine: str = "auto"
    # Keep this many cosine samples per measurement in cosines.parquet (None keeps all).
    max_cosines: int | None = None

    def __post_init__(self) -> None:
        _check_choice("measure", "granularity", self.granularity, GRANULARITIES)
        _check_choice("measure", "pairing", self.pairing, PAIRINGS)
        _check_choice("measure", "batchnorm", self.batchnorm, BATCHNORM_MODES)
        _check_min("measure", "num_pairs", self.num_pairs, 1)
        _check_min("measure", "num_gradients", self.num_gradients, 2)
        _check_min("measure", "batch_size", self.batch_size, 1)
        if self.granularity == "example" and self.batchnorm == "train":
            raise ConfigError(
                "measure.batchnorm='train' is only defined for granularity='minibatch', because "
                "per-example gradients under batch statistics couple the examples. Use "
                "measure.batchnorm='eval' with granularity='example'."
            )


@dataclass(frozen=True)
class RunConfig:
    """One training run: what is trained, on what, how, and how confusion is measured."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    seed: int = 0
    # "auto" picks CUDA when present, else CPU.
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved config as plain JSON-compatible data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """Return a short stable hash of the resolved config, used to match run directories."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "RunConfig":
        """Return a copy with dotted fields changed, e.g. ``replace(**{"model.width": 8})``."""
        data = self.to_dict()
        for dotted, value in changes.items():
            section, _, key = dotted.partition(".")
            if key:
                if section not in data or not isinstance(data[section], dict):
                    raise ConfigError(
                        f"unknown config section {section!r} in {dotted!r}; known sections: "
                        f"{', '.join(k for k, v in data.items() if isinstance(v, dict))}."
                    )
                data[section][key] = value
            else:
                data[section] = value
        return config_from_dict(RunConfig, data)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert JSON/TOML data to the annotated type, raising ConfigError on a mismatch."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}.")
        return config_from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}.")
        return value
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from plain data, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; known keys"
            f"{' of ' + where if where else ''}: {', '.join(known)}."
        )
    kwargs = {}
    for name in known:
        if name in data:
            label = f"{where}.{name}" if where else name
            kwargs[name] = _convert(data[name], hints[name], label)
    return cls(**kwargs)
