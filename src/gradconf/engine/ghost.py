"""The ghost engine: the exact per-example Gram from one forward and one backward pass.

``ghost_gram`` has the signature of ``loop_gram`` and returns the same ``GramResult``,
computed by ``GramCapture`` instead of one autograd call per example. For a layer applied
as y = W a at T positions, ⟨∇_W f_i, ∇_W f_j⟩ = Σ_{t,s} (a_it·a_js)(b_it·b_js), so the
Gram needs only activations and backprops; per parameter, a cost model decides whether
to use that identity ("ghost") or to form the per-example gradients ("materialize").
Modules without a kernel use the torch.func fallback ("func-fallback").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradconf.engine.capture import GradientEdge, GramCapture
from gradconf.engine.result import GramResult, check_loss_reduction
from gradconf.engine.state import preserved_model_state, reject_empty_batch, trainable_parameters

__all__ = ["ghost_gram"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def capture_batch(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str,
    batchnorm: str,
    route: str = "auto",
    quantity: str = "gram",
) -> GramCapture:
    """Run one forward and backward pass of ``loss_fn(model(inputs), targets)`` in a capture.

    The model is left as found: modes, ``.grad`` and buffers are restored. A Gram takes
    gradients with respect to the module outputs only (``GramCapture.backward``). Squared
    norms take the parameters' gradients with ``torch.autograd.grad``, for the check
    against the batch gradient. Neither writes ``.grad``.
    """
    check_loss_reduction(loss_reduction)
    reject_empty_batch(inputs)
    with preserved_model_state(model):
        capture = GramCapture(
            model,
            loss_reduction=loss_reduction,
            batchnorm=batchnorm,
            route=route,
            quantity=quantity,
        )
        with capture:
            loss = loss_fn(model(inputs), targets)
            if loss.ndim != 0:
                raise ValueError(
                    f"loss_fn returned a tensor of shape {tuple(loss.shape)}; it must reduce "
                    f"over the batch to a scalar, as loss_reduction={loss_reduction!r} declares."
                )
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss is {loss.item()}; a Gram of non-finite gradients is "
                    "meaningless. Check the inputs and the model's weights."
                )
            if quantity == "gram" and GradientEdge is not None:
                capture.backward(loss)
            else:
                # Squared norms are checked against autograd's batch gradient.
                params = [param for _, param in trainable_parameters(model)[0]]
                torch.autograd.grad(loss, params, allow_unused=True)
    return capture


def ghost_gram(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    batchnorm: str = "eval",
    route: str = "auto",
) -> GramResult:
    """Compute the per-example Gram from one forward and backward: [B, ...] -> [B, B].

    ``loss_fn(outputs, targets)`` must reduce over the batch as ``loss_reduction``
    declares. Under "mean" every entry is 1/B² times ⟨∇f_i, ∇f_j⟩, which
    ``GramResult.example_gram()`` undoes.
    ``batchnorm="eval"`` evaluates BatchNorm with running statistics. ``route`` forces
    "ghost" or "materialize" where a parameter has both (for tests and benchmarks).
    Accumulates in float64; the model is left as found.
    """
    capture = capture_batch(
        model, loss_fn, inputs, targets,
        loss_reduction=loss_reduction, batchnorm=batchnorm, route=route,
    )
    return capture.result()
