"""Result types shared by every Gram engine.

Notation used across ``gradconf.engine``:

- B: number of gradients (examples, or mini-batches for the mini-batch protocol)
- T: positions per example at one layer (1 for an MLP layer, output pixels for a conv)
- d: layer input width, p: layer output width, P: number of trainable parameters
- g_i ∈ R^P: gradient of example i's contribution to the loss as given
- gram: the [B, B] matrix G_ij = ⟨g_i, g_j⟩, and ``layer_grams`` its per-parameter terms,
  so ``gram == sum(layer_grams.values())``

Scaling: under ``loss_reduction="mean"`` example i contributes f_i / B to the loss, so every
inner product is 1/B² times the one of the per-example losses f_i. Cosines do not change.
``GramResult.example_gram()`` undoes the scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Coverage", "GramResult", "LOSS_REDUCTIONS"]

LOSS_REDUCTIONS = ("mean", "sum")


def check_loss_reduction(loss_reduction: str) -> None:
    """Raise ValueError unless ``loss_reduction`` is "mean" or "sum"."""
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(
            f"loss_reduction={loss_reduction!r} is not supported; allowed: 'mean' (the loss "
            "averages over the batch) or 'sum'. Pass the reduction your loss function uses."
        )


@dataclass(frozen=True)
class Coverage:
    """Which trainable parameters a Gram covers.

    ``included`` parameters contribute to the Gram; ``frozen`` ones (``requires_grad=False``)
    and ``unused`` ones (no gradient reached them in the forward) are listed, not silently
    dropped. ``share`` is the included fraction of the trainable parameter count P.
    """

    included: tuple[str, ...]
    frozen: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    included_numel: int = 0
    trainable_numel: int = 0

    @property
    def share(self) -> float:
        """Included fraction of the trainable parameters (1.0 when all are covered)."""
        if self.trainable_numel == 0:
            return 0.0
        return self.included_numel / self.trainable_numel


@dataclass(frozen=True)
class GramResult:
    """Gram matrix of a set of gradients, with its per-parameter breakdown.

    ``gram`` is [B, B] float64 on the CPU. ``layer_grams`` maps each included parameter's
    qualified name to its [B, B] term. ``routes`` maps each parameter to how the engine
    computed it (e.g. "ghost", "materialize", "loop", "minibatch-autograd").
    """

    gram: torch.Tensor
    layer_grams: dict[str, torch.Tensor]
    coverage: Coverage
    granularity: str
    loss_reduction: str
    batchnorm: str
    engine: str
    routes: dict[str, str] = field(default_factory=dict)
    # Examples per gradient: the batch size B of the loss, used to undo the 1/B² scaling.
    batch_size: int = 0

    @property
    def num_gradients(self) -> int:
        """Number of gradients B (rows of ``gram``)."""
        return int(self.gram.shape[0])

    @property
    def sq_norms(self) -> torch.Tensor:
        """Squared gradient norms, the diagonal of ``gram``: [B]."""
        return torch.diagonal(self.gram).clone()

    def example_gram(self) -> torch.Tensor:
        """Return the Gram of the per-example loss gradients ⟨∇f_i, ∇f_j⟩ ([B, B]).

        Under ``loss_reduction="mean"`` this multiplies ``gram`` by B²; under "sum" it is
        ``gram`` itself. For the mini-batch protocol each gradient already is a mean-loss
        gradient and is returned unchanged.
        """
        if self.granularity == "example" and self.loss_reduction == "mean":
            return self.gram * float(self.batch_size) ** 2
        return self.gram

    def cosines(self) -> torch.Tensor:
        """Return the [B, B] cosine matrix; entries with a zero-norm gradient are NaN."""
        norms = torch.sqrt(torch.clamp(self.sq_norms, min=0.0))
        denominator = norms[:, None] * norms[None, :]
        cosine = self.gram / denominator
        return torch.where(denominator > 0, cosine, torch.full_like(cosine, float("nan")))
