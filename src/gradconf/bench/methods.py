"""The timed methods: plain forward+backward, four per-example peers and gradconf.

Each ``prepare_*`` function does the untimed setup (hooks, wrappers, buffers) and returns a
``PreparedMethod`` whose ``run()`` does one timed call: forward, backward and the [B, B]
Gram. Every Gram is float64 on the CPU in mean-loss scaling, G_ij = ⟨∇f_i, ∇f_j⟩ / B²,
the scaling of ``GramResult.gram`` under ``loss_reduction="mean"``. The peers compute each
parameter's term from its per-example gradients [B, *param.shape] as a fp32 [B, P_k] @
[P_k, B] product and add the terms in float64, which is their cheapest full-Gram route.
Every ``run()`` frees its per-example gradients and ``.grad`` before returning, so that
repeated calls start from the same state.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from gradconf.engine import per_example_gram

__all__ = ["METHODS", "PEER_METHODS", "BenchMethod", "PreparedMethod", "unavailable_reason"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# BackPACK and Opacus use full backward hooks, on which PyTorch warns when the inputs do not
# require gradients (true here, and harmless for parameter gradients).
_HOOK_WARNING = "Full backward hook is firing"


@dataclass
class PreparedMethod:
    """A method ready to time: ``run()`` returns the [B, B] float64 Gram, or None for the
    plain baseline. ``details`` collects facts a call reports, such as the resolved engine."""

    run: Callable[[], torch.Tensor | None]
    details: dict[str, str] = field(default_factory=dict)


def gram_from_grad_samples(grad_samples: Iterable[torch.Tensor], scale: float) -> torch.Tensor:
    """Sum per-parameter Grams of per-example gradients: [B, *shape] each -> [B, B] float64.

    ``scale`` multiplies every entry (1/B² turns ∇f_i inner products into mean-loss ones).
    """
    gram: torch.Tensor | None = None
    for grad_sample in grad_samples:
        flat = grad_sample.reshape(grad_sample.shape[0], -1)  # [B, P_k]
        term = (flat @ flat.T).to(torch.float64)  # [B, B]
        gram = term if gram is None else gram + term
    if gram is None:
        raise ValueError("no per-example gradients were produced; the model has no parameters.")
    return (gram * scale).cpu()


def _clear_grads(params: Iterable[nn.Parameter], *attributes: str) -> None:
    for param in params:
        param.grad = None
        for attribute in attributes:
            if hasattr(param, attribute):
                delattr(param, attribute)


def prepare_plain(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare forward and backward of the mean loss, the baseline of every ratio."""
    params = list(model.parameters())

    def run() -> None:
        loss_fn(model(inputs), targets).backward()
        _clear_grads(params)

    return PreparedMethod(run)


def prepare_loop(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare one ``torch.autograd.grad`` call per example into [B, *shape] buffers."""
    params = list(model.parameters())
    batch_size = inputs.shape[0]

    def run() -> torch.Tensor:
        buffers = [param.new_empty((batch_size, *param.shape)) for param in params]
        for index in range(batch_size):
            loss = loss_fn(model(inputs[index : index + 1]), targets[index : index + 1])
            for buffer, grad in zip(buffers, torch.autograd.grad(loss, params)):
                buffer[index] = grad
        return gram_from_grad_samples(buffers, 1.0 / batch_size**2)

    return PreparedMethod(run)


def prepare_vmap(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare ``torch.func.vmap(grad(...))`` over examples, with the weights passed by
    ``functional_call``."""
    from torch.func import functional_call, grad, vmap

    params = {name: param.detach() for name, param in model.named_parameters()}
    batch_size = inputs.shape[0]

    def example_loss(weights, example_input, example_target):
        outputs = functional_call(model, weights, (example_input.unsqueeze(0),))  # [1, C]
        return loss_fn(outputs, example_target.unsqueeze(0))

    per_example_grads = vmap(grad(example_loss), in_dims=(None, 0, 0))

    def run() -> torch.Tensor:
        grad_samples = per_example_grads(params, inputs, targets)  # name -> [B, *shape]
        return gram_from_grad_samples(grad_samples.values(), 1.0 / batch_size**2)

    return PreparedMethod(run)


def prepare_backpack(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare BackPACK's ``BatchGrad`` extension, whose ``grad_batch`` is mean-loss scaled."""
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    extended = extend(model)
    params = list(extended.parameters())

    def run() -> torch.Tensor:
        with warnings.catch_warnings(), backpack(BatchGrad()):
            warnings.filterwarnings("ignore", message=_HOOK_WARNING)
            loss_fn(extended(inputs), targets).backward()
        gram = gram_from_grad_samples((param.grad_batch for param in params), 1.0)
        _clear_grads(params, "grad_batch")
        return gram

    return PreparedMethod(run)


def prepare_opacus(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare Opacus ``GradSampleModule`` hooks. ``grad_sample`` contains ∇f_i, hence 1/B²."""
    from opacus import GradSampleModule

    wrapped = GradSampleModule(model, loss_reduction="mean")
    params = list(wrapped.parameters())
    batch_size = inputs.shape[0]

    def run() -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HOOK_WARNING)
            loss_fn(wrapped(inputs), targets).backward()
        gram = gram_from_grad_samples((p.grad_sample for p in params), 1.0 / batch_size**2)
        for param in params:
            param.grad_sample = None
            param.grad = None
        return gram

    return PreparedMethod(run)


def prepare_gradconf(model: nn.Module, loss_fn: LossFn, inputs, targets) -> PreparedMethod:
    """Prepare ``per_example_gram`` with ``engine="auto"`` and record the engine it used."""
    details: dict[str, str] = {}

    def run() -> torch.Tensor:
        result = per_example_gram(
            model, loss_fn, inputs, targets, loss_reduction="mean", engine="auto"
        )
        details["engine"] = result.engine
        return result.gram

    return PreparedMethod(run, details)


@dataclass(frozen=True)
class BenchMethod:
    """A benchmarked method: its table label, setup function and optional package."""

    name: str
    label: str
    prepare: Callable[..., PreparedMethod]
    # Importable module the method needs and the pip distribution that provides it.
    requires: str | None = None
    distribution: str | None = None


METHODS: dict[str, BenchMethod] = {
    method.name: method
    for method in (
        BenchMethod("plain", "plain fwd+bwd", prepare_plain),
        BenchMethod("loop", "per-example loop", prepare_loop),
        BenchMethod("vmap", "torch.func vmap(grad)", prepare_vmap),
        BenchMethod("backpack", "BackPACK BatchGrad", prepare_backpack, "backpack",
                    "backpack-for-pytorch"),
        BenchMethod("opacus", "Opacus GradSampleModule", prepare_opacus, "opacus", "opacus"),
        BenchMethod("gradconf", "gradconf (auto)", prepare_gradconf),
    )
}
# The peer libraries of the targets. The per-example loop is the naive baseline: its row and
# speed-up are in the table, but it is not a peer.
PEER_METHODS = ("vmap", "backpack", "opacus")


def unavailable_reason(name: str) -> str | None:
    """Return why method ``name`` cannot run here (its package does not import), else None."""
    method = METHODS[name]
    if method.requires is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(method.requires)
    except ImportError as error:
        return (
            f"{method.requires} is not importable ({error}); install it with "
            f"`pip install {method.distribution}`"
        )
    return None
