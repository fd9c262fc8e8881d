"""The sweep file: a base run config, the axes varied around it, seeds and a learning-rate grid.

A sweep file is TOML with these top-level keys (any other key is rejected)::

    name = "depth-width"              # required
    seeds = [0, 1, 2]                 # default: [base.seed]
    [base]                            # a partial RunConfig: model, data, train, measure,
    [base.model]                      # seed, device; absent keys keep their defaults
    kind = "mlp"
    [grid]                            # cartesian product over dotted RunConfig fields
    "model.depth" = [1, 2, 4]
    [zip]                             # axes varied together; lists of equal length
    "model.batchnorm" = [false, true]
    "model.skip" = [false, true]
    "label.variant" = ["plain", "bn+skip"]   # label only, the config is unchanged
    [lr_selection]                    # train every learning rate, then select one
    grid = [0.01, 0.03, 0.1]
    rule = "lowest_final_train_loss"

``zip`` may also be an array of tables (``[[zip]]``), one per group of axes varied together.
Axes named ``label.<name>`` change no config field: they add ``<name>`` to the run labels, so
a report can group runs by it.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gradconf.config import (
    ConfigError,
    DataConfig,
    MeasureConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    _convert,
)

__all__ = [
    "LABEL_PREFIX",
    "LR_RULES",
    "LearningRateSelection",
    "SweepSpec",
    "load_sweep",
    "parse_sweep",
    "shipped_sweeps",
]

TOP_LEVEL_KEYS = ("name", "base", "grid", "zip", "seeds", "lr_selection")
LR_SELECTION_KEYS = ("grid", "rule")
LR_RULES = ("lowest_final_train_loss",)
LABEL_PREFIX = "label."
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "measure": MeasureConfig,
}


def _field_types() -> dict[str, Any]:
    """Return every dotted RunConfig field that an axis may vary, with its annotation."""
    fields: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        for name, annotation in typing.get_type_hints(cls).items():
            fields[f"{section}.{name}"] = annotation
    fields["device"] = str
    return fields


FIELD_TYPES = _field_types()


@dataclass(frozen=True)
class LearningRateSelection:
    """Learning rates that every configuration is trained with, and how one is selected.

    The rule "lowest_final_train_loss" selects, per configuration, the learning rate with the
    lowest training loss after the last epoch, averaged over seeds. A diverged run counts as
    +inf.
    """

    grid: tuple[float, ...]
    rule: str = "lowest_final_train_loss"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: runs are ``base`` with every combination of the axes applied.

    ``base`` is the partial run config of the file, with sections as nested dicts and values
    converted to their field types. Fields it leaves out keep the ``RunConfig`` defaults.

    ``grid`` maps a dotted field (or ``label.<name>``) to its values; the product runs over
    the grid axes in order, then over the ``zip`` groups (each group's axes advance
    together), then the learning rates, then ``seeds``.
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    zip: tuple[dict[str, tuple[Any, ...]], ...] = ()
    seeds: tuple[int, ...] = (0,)
    lr_selection: LearningRateSelection | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the validated sweep as JSON-compatible data that ``parse_sweep`` accepts."""
        data: dict[str, Any] = {
            "name": self.name,
            "base": self.base,
            "grid": {key: list(values) for key, values in self.grid.items()},
            "zip": [{key: list(values) for key, values in group.items()} for group in self.zip],
            "seeds": list(self.seeds),
        }
        if self.lr_selection is not None:
            data["lr_selection"] = dataclasses.asdict(self.lr_selection)
        return json.loads(json.dumps(data))


def _reject_unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(known)}."
        )


def _require_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}.")
    return value


def _distinct_list(value: Any, where: str, distinct: bool = True) -> list[Any]:
    """Check that ``value`` is a non-empty list, without repeated entries if ``distinct``."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list of values, got {value!r}.")
    if not value:
        raise ConfigError(f"{where} is an empty list, so the sweep would have no runs; give at "
                          "least one value.")
    if not distinct:
        return list(value)
    seen: set[str] = set()
    for item in value:
        text = json.dumps(item, sort_keys=True, default=str)
        if text in seen:
            raise ConfigError(f"{where}={list(value)!r} contains {item!r} twice; list each "
                              "value once.")
        seen.add(text)
    return list(value)


def _check_axis_key(key: str, where: str) -> None:
    if key.startswith(LABEL_PREFIX):
        label = key[len(LABEL_PREFIX):]
        if not label or "." in label or label == "seed":
            raise ConfigError(
                f"{where} has the label axis {key!r}; a label axis is 'label.<name>' with a "
                "name without dots other than 'seed'."
            )
        return
    if key == "seed":
        raise ConfigError(f"{where} varies 'seed'; list the seeds in the top-level key "
                          "seeds = [...] instead.")
    if key not in FIELD_TYPES:
        section = key.partition(".")[0]
        known = [name for name in FIELD_TYPES if name.startswith(f"{section}.")]
        if not known:
            known = [*SECTIONS, "device", f"{LABEL_PREFIX}<name>"]
        raise ConfigError(f"unknown field {key!r} in {where}; known fields: {', '.join(known)}.")


def _parse_axis(key: str, values: Any, where: str, distinct: bool) -> tuple[Any, ...]:
    """Validate one axis: a known key and a non-empty list of values of the field's type.

    A grid axis lists distinct values; a zipped axis may repeat a value, because only the
    zipped points (checked by ``expand``) must differ.
    """
    _check_axis_key(key, where)
    values = _distinct_list(values, f"{where} {key}", distinct)
    if key.startswith(LABEL_PREFIX):
        for value in values:
            if not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"{where} {key} contains {value!r}; label values must be "
                                  "strings, numbers or booleans.")
        return tuple(values)
    return tuple(_convert(value, FIELD_TYPES[key], f"{where} {key}") for value in values)


def _parse_grid(value: Any) -> dict[str, tuple[Any, ...]]:
    table = _require_table(value, "[grid]")
    if not table:
        raise ConfigError("[grid] is empty; add an axis such as \"model.width\" = [8, 32] or "
                          "remove the [grid] table.")
    return {key: _parse_axis(key, values, "[grid]", distinct=True)
            for key, values in table.items()}


def _parse_zip_group(value: Any, where: str) -> dict[str, tuple[Any, ...]]:
    table = _require_table(value, where)
    if not table:
        raise ConfigError(f"{where} is empty; add axes of equal length or remove it.")
    group = {key: _parse_axis(key, values, where, distinct=False)
             for key, values in table.items()}
    lengths = {key: len(values) for key, values in group.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{key} has {length}" for key, length in lengths.items())
        raise ConfigError(f"{where} axes have different lengths ({listed} values); axes "
                          "varied together need lists of equal length.")
    return group


def _parse_zip(value: Any) -> tuple[dict[str, tuple[Any, ...]], ...]:
    if isinstance(value, list):
        if not value:
            raise ConfigError("[[zip]] is an empty array; add a group of axes or remove it.")
        return tuple(_parse_zip_group(group, f"[[zip]] group {index}")
                     for index, group in enumerate(value))
    return (_parse_zip_group(value, "[zip]"),)


def _parse_seeds(value: Any) -> tuple[int, ...]:
    seeds = _distinct_list(value, "seeds")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seeds contains {seed!r}; seeds must be integers >= 0.")
    return tuple(seeds)


def _parse_lr_selection(value: Any) -> LearningRateSelection:
    table = _require_table(value, "[lr_selection]")
    _reject_unknown(table, LR_SELECTION_KEYS, "[lr_selection]")
    if "grid" not in table:
        raise ConfigError("[lr_selection] has no grid; add grid = [0.01, 0.03, 0.1].")
    rates = _distinct_list(table["grid"], "[lr_selection] grid")
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ConfigError(f"[lr_selection] grid contains {rate!r}; learning rates must be "
                              "numbers > 0.")
    rule = table.get("rule", LR_RULES[0])
    if rule not in LR_RULES:
        raise ConfigError(f"[lr_selection] rule={rule!r} is not supported; allowed rules: "
                          f"{', '.join(LR_RULES)}.")
    return LearningRateSelection(grid=tuple(float(rate) for rate in rates), rule=rule)


def parse_sweep(data: dict[str, Any]) -> SweepSpec:
    """Validate sweep data (a parsed TOML file or ``SweepSpec.to_dict()``) into a spec.

    Raises ``ConfigError`` (a ``ValueError``) that names the key and the allowed values. The
    causes are an unknown key, a value of the wrong type, an empty axis, zipped axes of
    unequal length, an axis listed twice, or a combination that no ``RunConfig`` accepts.
    """
    from gradconf.sweeps.expand import expand

    _reject_unknown(data, TOP_LEVEL_KEYS, "the sweep file")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty string, got {name!r}; add a line such "
                          "as name = \"depth-width\" to the sweep file.")
    base = _parse_base(data["base"]) if "base" in data else {}
    grid = _parse_grid(data["grid"]) if "grid" in data else {}
    zipped = _parse_zip(data["zip"]) if "zip" in data else ()
    seeds = _parse_seeds(data["seeds"]) if "seeds" in data else (base.get("seed", 0),)
    lr_selection = _parse_lr_selection(data["lr_selection"]) if "lr_selection" in data else None

    axes = [*grid, *(key for group in zipped for key in group)]
    repeated = sorted({key for key in axes if axes.count(key) > 1})
    if repeated:
        raise ConfigError(f"axis {', '.join(repeated)} appears more than once in [grid] and "
                          "[zip]; vary each field in one place.")
    if lr_selection is not None and "train.lr" in axes:
        raise ConfigError("train.lr is an axis and [lr_selection] is set; list the learning "
                          "rates in [lr_selection] grid only.")
    spec = SweepSpec(name=name, base=base, grid=grid, zip=zipped, seeds=seeds,
                     lr_selection=lr_selection)
    expand(spec)  # Every combination must be a valid RunConfig before any run starts.
    return spec


def _parse_base(value: Any) -> dict[str, Any]:
    """Check the keys and value types of ``[base]``; return it with values converted.

    Checks between fields (such as the CNN depth rule) wait for ``expand``, because an axis
    may set the field that makes the base valid (``kind = "cnn"`` with a depth grid).
    """
    table = _require_table(value, "[base]")
    run_fields = typing.get_type_hints(RunConfig)
    _reject_unknown(table, tuple(run_fields), "[base]")
    base: dict[str, Any] = {}
    for key, item in table.items():
        if key not in SECTIONS:
            base[key] = _convert(item, run_fields[key], f"[base] {key}")
            continue
        section = _require_table(item, f"[base.{key}]")
        hints = typing.get_type_hints(SECTIONS[key])
        unknown = sorted(set(section) - set(hints))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(f'{key}.{name}' for name in unknown)} in [base]; "
                f"known keys of {key}: {', '.join(hints)}."
            )
        base[key] = {name: _convert(setting, hints[name], f"[base] {key}.{name}")
                     for name, setting in section.items()}
    return base


def shipped_sweeps() -> dict[str, Path]:
    """Return the sweep files shipped with gradconf, by name (the file name without .toml)."""
    folder = resources.files("gradconf.sweeps") / "files"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".toml")
    }


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; a bare name such as "study" loads a shipped file.

    Raises FileNotFoundError when ``path`` is neither a file nor a shipped name, and
    ``ConfigError`` for invalid TOML or invalid contents (the message names the file).
    """
    candidate = Path(path)
    if not candidate.is_file():
        shipped = shipped_sweeps()
        if str(path) not in shipped:
            raise FileNotFoundError(
                f"sweep file {str(path)!r} not found, and it is not the name of a shipped "
                f"sweep ({', '.join(shipped)}). Pass the path of a .toml sweep file."
            )
        candidate = shipped[str(path)]
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{candidate} is not valid TOML: {error}.") from None
    try:
        return parse_sweep(data)
    except ConfigError as error:
        raise ConfigError(f"{candidate}: {error}") from None
