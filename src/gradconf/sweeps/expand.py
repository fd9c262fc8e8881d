"""Expand a sweep spec into planned runs with readable, stable run ids.

A run id lists the varied config fields in axis order, then the learning rate and the seed,
e.g. ``model.depth=16,model.width=2,lr=0.1,seed=0``. It depends only on those values, never
on the position of the run in the sweep, so adding values to an axis keeps the ids (and the
finished runs) of the others. Label axes (``label.<name>``) appear in the labels, not the id.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from typing import Any

from gradconf.config import ConfigError, RunConfig, config_from_dict
from gradconf.runs.plan import PlannedRun
from gradconf.sweeps.spec import LABEL_PREFIX, SweepSpec

__all__ = ["build_config", "expand", "format_value", "run_id_for"]

# Folder names stay well below the usual 255-byte limit, leaving room for the
# ".<run_id>.partial" and ".<run_id>.error.txt" siblings.
MAX_RUN_ID_LENGTH = 120
# Short names used in run ids only; labels keep the dotted field name.
ID_ALIASES = {"train.lr": "lr"}
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._,=+-]")


def format_value(value: Any) -> str:
    """Return the text of one axis value in a run id (floats in their shortest exact form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "_".join(format_value(item) for item in value)
    return repr(value) if isinstance(value, float) else str(value)


def _id_text(values: dict[str, Any]) -> str:
    return ",".join(f"{ID_ALIASES.get(key, key)}={format_value(value)}"
                    for key, value in values.items())


def run_id_for(values: dict[str, Any]) -> str:
    """Return the folder-safe run id of one combination of config values.

    Characters other than letters, digits and ``._,=+-`` become ``_``. An id longer than
    ``MAX_RUN_ID_LENGTH`` is cut and ends with ``,hash=`` and 8 hex digits of the full text.
    """
    text = _id_text(values)
    safe = UNSAFE_CHARACTERS.sub("_", text)
    if len(safe) <= MAX_RUN_ID_LENGTH:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    suffix = f",hash={digest}"
    return safe[: MAX_RUN_ID_LENGTH - len(suffix)] + suffix


def build_config(base: dict[str, Any], changes: dict[str, Any]) -> RunConfig:
    """Return the ``RunConfig`` of a partial base config with dotted fields changed."""
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if key:
            data.setdefault(section, {})[key] = value
        else:
            data[section] = value
    return config_from_dict(RunConfig, data)


def _axis_groups(spec: SweepSpec) -> list[list[dict[str, Any]]]:
    """Return one list of points per independent axis; the runs are their product."""
    groups: list[list[dict[str, Any]]] = [
        [{key: value} for value in values] for key, values in spec.grid.items()
    ]
    for zipped in spec.zip:
        length = len(next(iter(zipped.values())))
        groups.append([{key: values[index] for key, values in zipped.items()}
                       for index in range(length)])
    if spec.lr_selection is not None:
        groups.append([{"train.lr": rate} for rate in spec.lr_selection.grid])
    groups.append([{"seed": seed} for seed in spec.seeds])
    return groups


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Return every run of the sweep, in the order of the axes (seeds vary fastest).

    Each run's labels hold every varied value: config fields under their dotted name
    (``model.depth``, ``train.lr``), label axes under their bare name, and ``seed``. Raises
    ``ConfigError`` when a combination is not a valid ``RunConfig`` or when two runs would
    share an id or a config.
    """
    planned: list[PlannedRun] = []
    ids: dict[str, str] = {}
    digests: dict[str, str] = {}
    for points in itertools.product(*_axis_groups(spec)):
        combined: dict[str, Any] = {}
        for point in points:
            combined.update(point)
        changes = {key: value for key, value in combined.items()
                   if not key.startswith(LABEL_PREFIX)}
        run_id = run_id_for(changes)
        try:
            config = build_config(spec.base, changes)
        except ConfigError as error:
            raise ConfigError(f"run {run_id} is invalid: {error}") from None
        labels = {key.removeprefix(LABEL_PREFIX): value for key, value in combined.items()}

        digest = config.digest()
        if digest in digests:
            raise ConfigError(f"runs {digests[digest]} and {run_id} have the same config "
                              "(only label axes differ); give each label value its own "
                              "config, or drop the label axis.")
        digests[digest] = run_id
        if run_id in ids:
            raise ConfigError(f"runs {ids[run_id]} and {_id_text(changes)} share the folder "
                              f"name {run_id!r}; use axis values that differ in letters or "
                              "digits.")
        ids[run_id] = _id_text(changes)
        planned.append(PlannedRun(run_id, labels, config))
    return planned
