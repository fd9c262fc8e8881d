"""The torch.func fallback for modules without a kernel.

The module's forward is re-run per example with ``torch.func.vmap`` over a
``torch.func.vjp`` of ``torch.func.functional_call``, and each example's output backprops
are pulled back to the module's parameters. This gives grad_sample [B, *param.shape] for
any module whose forward treats examples independently and draws no random numbers, at
about the cost of B small forward and backward passes of that module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from gradconf.engine.layers.terms import SampleTerm

__all__ = ["flatten_outputs", "func_fallback_terms"]


def flatten_outputs(output: Any) -> list[torch.Tensor | None] | None:
    """Return a module output's tensors by position, or None for an unsupported structure.

    A tensor, or a tuple or list whose entries are tensors or other values (kept as None),
    is supported; nested containers and dicts are not.
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [item if isinstance(item, torch.Tensor) else None for item in output]
    return None


def _is_batched(value: Any, batch_size: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch_size


def func_fallback_terms(
    module: nn.Module,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    backprops: Sequence[torch.Tensor | None],
    outputs: Sequence[tuple[torch.Size, torch.dtype] | None],
    params: Mapping[str, torch.Tensor],
    batch_size: int,
) -> dict[str, SampleTerm]:
    """Compute grad_sample [B, *param.shape] for ``params`` of ``module`` by vmap over vjp.

    ``args``/``kwargs`` are the module's captured inputs: tensors whose dimension 0 has
    size B are split per example (and given back a batch dimension of one), all other
    values are shared. ``outputs`` contains (shape, dtype) per output position whose gradient
    is pulled back, and ``backprops`` the captured gradient there (None counts as zero).
    ``params`` maps names relative to ``module`` to the parameters to differentiate.
    """
    arg_slots = [index for index, value in enumerate(args) if _is_batched(value, batch_size)]
    kwarg_slots = [key for key, value in kwargs.items() if _is_batched(value, batch_size)]
    if not arg_slots and not kwarg_slots:
        raise ValueError(
            f"{type(module).__name__} received no tensor input with batch size {batch_size} "
            "in dimension 0, so its per-example gradients cannot be separated. The "
            "torch.func fallback needs batch-first tensor inputs."
        )
    output_slots = [slot for slot, spec in enumerate(outputs) if spec is not None]
    cotangents = []
    for slot in output_slots:
        shape, dtype = outputs[slot]
        backprop = backprops[slot]
        if backprop is None:
            backprop = torch.zeros(shape, dtype=dtype, device=next(iter(params.values())).device)
        cotangents.append(backprop)
    batched_args = [args[index] for index in arg_slots]
    batched_kwargs = {key: kwargs[key] for key in kwarg_slots}
    primals = {name: param.detach() for name, param in params.items()}

    def one_example(arg_values, kwarg_values, example_cotangents):
        call_args = list(args)
        for index, value in zip(arg_slots, arg_values, strict=True):
            call_args[index] = value.unsqueeze(0)  # (1, ...): a batch of one
        call_kwargs = dict(kwargs)
        for key, value in kwarg_values.items():
            call_kwargs[key] = value.unsqueeze(0)

        def forward(weights):
            flat = flatten_outputs(functional_call(module, weights, tuple(call_args), call_kwargs))
            return tuple(flat[slot] for slot in output_slots)

        _, pullback = vjp(forward, primals)
        (grads,) = pullback(tuple(value.unsqueeze(0) for value in example_cotangents))
        return grads

    try:
        with torch.enable_grad():
            grad_samples = vmap(one_example)(batched_args, batched_kwargs, tuple(cotangents))
    except RuntimeError as err:
        raise RuntimeError(
            f"the torch.func fallback failed for {type(module).__name__}: {err}. It re-runs "
            "the module per example with torch.func.vmap, which rejects random draws "
            "(dropout in train mode) and data-dependent control flow. Put such modules in "
            "eval mode, or use engine='loop'."
        ) from err
    return {name: SampleTerm(grad_sample) for name, grad_sample in grad_samples.items()}
