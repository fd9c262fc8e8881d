"""Attach-time checks: which layers the monitor can measure, and what changed since.

Every module that owns trainable parameters, and every BatchNorm module, is checked when
the monitor attaches. A module listed in the engine's layer table
(``gradconf.engine.layers.LAYER_KERNELS``) runs that kernel's own check. Any other module
uses the engine's torch.func fallback, which re-runs the module's forward per example.
The rules below reject, at attach time, the modules for which that cannot work.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

from torch import nn

from gradconf.engine.layers import kernel_for
from gradconf.engine.state import BATCHNORM_TYPES

__all__ = [
    "BATCHNORM_MODES",
    "LayerPlan",
    "check_unchanged",
    "claim_model",
    "inspect_model",
    "release_model",
]

logger = logging.getLogger(__name__)

# "error": BatchNorm in train mode is rejected; "eval": measured steps run it with running
# statistics, which changes those training steps (see Monitor).
BATCHNORM_MODES = ("error", "eval")

# nn.RNN and nn.GRU return h_n [layers, B, H] next to the output, but the fallback maps
# every output over dimension 0. NOTE: observed with torch 2.14; nn.LSTM nests h_n in a
# tuple, which the fallback skips, so it works with batch_first=True.
_FALLBACK_REJECTED = (nn.RNN, nn.GRU)


@dataclass(frozen=True)
class LayerPlan:
    """The parameter-owning modules of a model at attach time and how each is measured.

    ``layers`` maps module name -> "kernel" or "fallback"; ``parameters`` maps each
    parameter's id to its qualified name, frozen ones included; ``trainable`` contains
    the ids of those with ``requires_grad``.
    """

    layers: dict[str, str]
    parameters: dict[int, str]
    trainable: frozenset[int]

    @property
    def fallback_layers(self) -> list[str]:
        """Names of modules measured by the torch.func fallback."""
        return [name for name, route in self.layers.items() if route == "fallback"]


def _dropout_rate(module: nn.Module) -> float:
    """Return the largest dropout probability in ``module`` or its descendants."""
    rates = [0.0]
    for child in module.modules():
        if isinstance(child, nn.modules.dropout._DropoutNd):
            rates.append(float(child.p))
        rate = getattr(child, "dropout", None)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            rates.append(float(rate))
    return max(rates)


def _problem(name: str, module: nn.Module, batchnorm: str) -> str | None:
    """Return why ``module`` cannot be measured per example, or None if it can."""
    label = f"{name or 'the model'} ({type(module).__name__})"
    if isinstance(module, BATCHNORM_TYPES):
        if not module.track_running_stats:
            return (
                f"{label} has track_running_stats=False, so it normalizes with the batch's "
                "statistics in every mode and per-example gradients are not defined"
            )
        if module.training and batchnorm == "error":
            return (
                f"{label} is in train mode, where it normalizes with the batch's statistics, "
                "so per-example gradients are not defined (pass batchnorm='eval' to measure "
                "with running statistics, which changes the measured training steps)"
            )
        return None
    kernel = kernel_for(module)
    if kernel is not None:
        if kernel.check is not None:
            try:
                kernel.check(module)
            except ValueError as err:
                return f"{label}: {err}"
        return None
    if isinstance(module, _FALLBACK_REJECTED):
        return (
            f"{label} returns its hidden state with the batch in dimension 1, which the "
            "engine's torch.func fallback cannot split per example"
        )
    if getattr(module, "batch_first", True) is False:
        return (
            f"{label} has batch_first=False, but per-example gradients need the examples "
            "in dimension 0 of every input"
        )
    rate = _dropout_rate(module)
    if rate > 0:
        return (
            f"{label} applies dropout (p={rate}) inside its own forward, which the engine's "
            "torch.func fallback re-runs per example and cannot repeat with the same random "
            "draws; set its dropout to 0 or move dropout into a separate nn.Dropout module"
        )
    return None


def inspect_model(model: nn.Module, *, batchnorm: str) -> LayerPlan:
    """Check every parameter-owning module of ``model`` and return its ``LayerPlan``.

    Raises ValueError listing every module that cannot be measured per example.
    """
    layers: dict[str, str] = {}
    problems: list[str] = []
    for name, module in model.named_modules():
        owned = list(module.parameters(recurse=False))
        # BatchNorm in train mode couples the examples whether or not it has trainable
        # parameters; other layers matter only while they have some.
        if isinstance(module, BATCHNORM_TYPES) or any(param.requires_grad for param in owned):
            problem = _problem(name, module, batchnorm)
            if problem is not None:
                problems.append(problem)
        if owned:
            layers[name] = "kernel" if kernel_for(module) is not None else "fallback"
    if problems:
        listing = "\n  - ".join(problems)
        raise ValueError(
            f"the model has {len(problems)} layer(s) whose per-example gradients the monitor "
            f"cannot measure:\n  - {listing}\nChange these layers, or measure the model "
            "offline with gradconf.engine.loop_gram."
        )
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no parameters, so there is no gradient to monitor. "
            "Attach the monitor to the model that the optimizer trains."
        )
    named = list(model.named_parameters())
    plan = LayerPlan(
        layers=layers,
        parameters={id(param): name for name, param in named},
        trainable=frozenset(id(param) for _, param in named if param.requires_grad),
    )
    if plan.fallback_layers:
        logger.info(
            "measuring %s with the torch.func fallback, which re-runs each per example",
            plan.fallback_layers,
        )
    return plan


def check_unchanged(model: nn.Module, plan: LayerPlan) -> bool:
    """Raise ValueError if parameters were added to or removed from ``model`` since ``plan``.

    Returns whether the set of trainable parameters changed (a layer frozen or unfrozen),
    in which case the caller inspects the model again.
    """
    named = list(model.named_parameters())
    current = {id(param): name for name, param in named}
    added = [name for key, name in current.items() if key not in plan.parameters]
    removed = [name for key, name in plan.parameters.items() if key not in current]
    if added or removed:
        parts = []
        if added:
            parts.append(f"new parameters {added}")
        if removed:
            parts.append(f"removed parameters {removed}")
        raise ValueError(
            f"the model changed after the monitor attached: {' and '.join(parts)}. The "
            "monitor checks layers when it attaches; if the change is intended, call "
            "monitor.inspect() to check the new layers, then continue."
        )
    trainable = frozenset(id(param) for _, param in named if param.requires_grad)
    return trainable != plan.trainable


# Model -> the monitor attached to it. Weak on both sides, so a model or monitor that is
# garbage collected frees its entry.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()


def claim_model(model: nn.Module, monitor: object) -> None:
    """Record that ``monitor`` is attached to ``model``; raise if another one is.

    A model that shares parameters with an already monitored model (a submodule of it, or
    the model containing it) counts as the same model, because both monitors' hooks would
    measure the same backward pass.
    """
    ids = {id(param) for param in model.parameters()}
    for other_model, reference in list(_ATTACHED.items()):
        other = reference()
        if other is None:
            continue
        if other_model is model or ids & {id(param) for param in other_model.parameters()}:
            relation = "this model" if other_model is model else "a model sharing its parameters"
            raise RuntimeError(
                f"a Monitor is already attached to {relation} ({type(other_model).__name__}); "
                "one monitor per model measures every step it needs. Call detach() on the "
                "existing monitor before attaching a new one."
            )
    _ATTACHED[model] = weakref.ref(monitor)


def release_model(model: nn.Module, monitor: object) -> None:
    """Forget that ``monitor`` is attached to ``model`` (no effect if it is not)."""
    reference = _ATTACHED.get(model)
    if reference is not None and reference() is monitor:
        del _ATTACHED[model]
