"""Capture per-example Grams from an ordinary forward and backward pass.

``GramCapture`` hooks every module that owns trainable parameters. Forward hooks keep the
module's input (activations); tensor hooks on its outputs keep the gradient there
(backprops). When the backward reaches a parameter, a hook on that parameter turns its
uses into one [B, B] Gram term (``gradconf.engine.layers``) and frees them, so at most
the activations autograd keeps anyway, plus one layer's temporaries, are alive.

    with GramCapture(model, loss_reduction="mean") as capture:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()  # .grad is exactly what it would be without the capture
    result = capture.result()

Every hook returns None, so the backward and ``.grad`` are bit-for-bit those of the same
code without the capture. Problems found inside hooks are stored and raised by
``result()``, so a failing measurement never interrupts the training step.
``capture.backward(loss)`` in place of ``loss.backward()`` measures without computing
any parameter gradient, which is what ``ghost_gram`` does.

Each parameter's result is checked against the batch gradient (see
``gradconf.engine.layers.checks``), so a use the hooks missed raises an error instead
of returning the Gram of part of the gradient.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradconf.engine.layers import LayerKernel, choose_route, kernel_for
from gradconf.engine.layers.checks import (
    gram_matches,
    in_backward,
    parameter_edges,
    probe_matches,
    probe_vectors,
    used_outside_error,
)
from gradconf.engine.layers.fallback import flatten_outputs, func_fallback_terms
from gradconf.engine.layers.routes import ROUTES
from gradconf.engine.layers.terms import Term, combine_terms
from gradconf.engine.result import Coverage, GramResult, check_loss_reduction
from gradconf.engine.state import BATCHNORM_TYPES, batchnorm_in_train_mode, trainable_parameters

__all__ = ["CapturedBatch", "GramCapture"]

logger = logging.getLogger(__name__)

# Lets autograd.grad target a node's output. Tested with torch 2.14; older releases lack it.
GradientEdge = getattr(torch.autograd.graph, "GradientEdge", None)

QUANTITIES = ("gram", "sq_norms")
BATCHNORM_MODES = ("eval", "none")

@dataclass(frozen=True)
class CapturedBatch:
    """Measurements of one backward pass inside a ``GramCapture`` (float64, CPU).

    ``values`` maps each included parameter to its [B, B] Gram term (quantity "gram") or
    its [B] squared norms ("sq_norms"). ``batch_sq_norms`` maps it to ‖Σ_i g_i‖², taken
    from autograd's batch gradient after ``loss.backward()`` and from the sum of the Gram
    after ``GramCapture.backward()``.
    """

    quantity: str
    batch_size: int
    values: dict[str, torch.Tensor]
    batch_sq_norms: dict[str, torch.Tensor]
    routes: dict[str, str]
    coverage: Coverage


@dataclass
class _Plan:
    name: str
    module: nn.Module
    kernel: LayerKernel | None  # None: the torch.func fallback
    params: dict[str, nn.Parameter]  # trainable parameters the module owns directly
    descendants: list[tuple[str, nn.Module]] = field(default_factory=list)


@dataclass
class _Use:
    """One forward call of a planned module and what it needs for its Gram terms."""

    plan: _Plan
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[tuple[torch.Size, torch.dtype] | None]
    params: dict[str, nn.Parameter]
    versions: list[tuple[torch.Tensor, int]]
    backprops: list[torch.Tensor | None]
    remaining: int
    # Autograd graph at the call: (node, output_nr) per output slot, and the nodes that
    # produced the inputs, where the module's own part of the graph ends.
    output_edges: list[tuple[Any, int] | None]
    input_nodes: set[int]
    terms: dict[str, Term] | None = None
    filled: int = 0  # output slots whose backprop arrived
    expected: int = 0  # output slots reachable from the loss (set by backward())


@dataclass
class _MicroBatch:
    index: int
    batch_size: int | None = None
    saw_backward: bool = False
    uses: dict[int, _Use] = field(default_factory=dict)
    pending: defaultdict[int, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    batch_sq_norms: dict[int, torch.Tensor] = field(default_factory=dict)
    routes: dict[int, str] = field(default_factory=dict)
    probes: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    calls: Counter[int] = field(default_factory=Counter)
    unseen: list[str] = field(default_factory=list)
    checked: set[int] = field(default_factory=set)  # parameters checked by the graph


class GramCapture:
    """Context manager that measures per-example Grams from the backward passes inside it.

    ``loss_reduction`` declares how the loss reduces over the batch ("mean": every inner
    product is 1/B² times that of the per-example losses; "sum"). ``batchnorm="eval"``
    puts BatchNorm in eval mode for the duration (restored on exit); "none" leaves modes
    alone and fails if a BatchNorm runs in train mode. ``route`` forces "ghost" or
    "materialize" for every parameter that has both ("auto": the cost model of
    ``gradconf.engine.layers.routes``). ``quantity="sq_norms"`` measures only the
    diagonal, ‖g_i‖², which is cheaper.

    Gradient accumulation: each backward pass closes one micro-batch, the forwards since
    the previous backward; ``results()`` returns one result per micro-batch. Inner
    products between examples of different micro-batches are not computed, so the Gram
    of the accumulated step is known only in its diagonal blocks. Each block is scaled as
    that micro-batch's loss was. A loss divided by the number M of micro-batches scales
    it by another 1/M².

    Model inputs must be batch-first: dimension 0 of each hooked module's input has size B.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss_reduction: str = "mean",
        batchnorm: str = "eval",
        route: str = "auto",
        quantity: str = "gram",
    ) -> None:
        check_loss_reduction(loss_reduction)
        _check_choice("batchnorm", batchnorm, BATCHNORM_MODES)
        _check_choice("route", route, ("auto", *ROUTES))
        _check_choice("quantity", quantity, QUANTITIES)
        self.model = model
        self.loss_reduction = loss_reduction
        self.batchnorm = batchnorm
        self.route = route
        self.quantity = quantity
        self._handles: list[Any] = []
        self._active = False
        self._suspended = False
        self._error: BaseException | None = None
        self._batch: _MicroBatch | None = None
        self._finished: list[CapturedBatch] = []
        self._use_ids = itertools.count()
        self._batch_ids = itertools.count()
        self._snapshots: dict[int, list[dict[int, int]]] = defaultdict(list)
        self._switched_batchnorm: list[nn.Module] = []
        self._measure_early: set[int] | None = None  # parameter ids, during backward()

    # -- context ---------------------------------------------------------------------------

    def __enter__(self) -> GramCapture:
        if self._active:
            raise RuntimeError("this GramCapture is already active; create one per `with` block.")
        trainable, frozen = trainable_parameters(self.model)
        if not trainable:
            raise ValueError(
                "the model has no trainable parameters (all have requires_grad=False); there "
                "is no gradient to measure. Unfreeze at least one parameter."
            )
        self._trainable = trainable
        self._frozen = tuple(frozen)
        self._names = {id(param): name for name, param in trainable}
        if self.batchnorm == "none" and batchnorm_in_train_mode(self.model):
            raise ValueError(
                f"BatchNorm modules {batchnorm_in_train_mode(self.model)} are in train mode, "
                "where per-example gradients are not defined. Pass batchnorm='eval' to use "
                "the running statistics, or measure mini-batch gradients with "
                "gradconf.engine.minibatch_gram(..., batchnorm='train')."
            )
        try:
            self._register_hooks()
        except BaseException:
            self._remove_hooks()
            raise
        if self.batchnorm == "eval":
            for module in self.model.modules():
                if isinstance(module, BATCHNORM_TYPES) and module.training:
                    module.eval()
                    self._switched_batchnorm.append(module)
        self._active = True
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._active = False
        self._remove_hooks()
        for module in self._switched_batchnorm:
            module.train()
        self._switched_batchnorm.clear()
        if exc_type is None:
            self._close_batch()
        else:
            self._batch = None

    def _register_hooks(self) -> None:
        # Registered first, so a new micro-batch opens before any module's own pre-hook.
        self._handles.append(
            self.model.register_forward_pre_hook(self._on_model_forward, with_kwargs=True)
        )
        plans: dict[int, _Plan] = {}
        for name, module in self.model.named_modules():
            params = {
                role: param
                for role, param in module._parameters.items()
                if param is not None and param.requires_grad
            }
            if params:
                plans[id(module)] = _Plan(name, module, kernel_for(module), params)
        for plan in plans.values():
            if plan.kernel is None:
                plan.descendants = [
                    (relative, module)
                    for relative, module in plan.module.named_modules()
                    if relative and id(module) in plans
                ]
                pre_hook = functools.partial(self._on_pre_forward, plan)
                self._handles.append(plan.module.register_forward_pre_hook(pre_hook))
            hook = functools.partial(self._on_forward, plan)
            self._handles.append(plan.module.register_forward_hook(hook, with_kwargs=True))
        for _, param in self._trainable:
            self._handles.append(param.register_hook(functools.partial(self._on_param_grad, param)))
        logger.debug("GramCapture hooked %d modules", len(plans))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def backward(self, loss: torch.Tensor) -> None:
        """Run the backward pass of ``loss`` for the measurement alone, then measure.

        Gradients are taken with respect to the captured module outputs only, so no
        parameter gradient is computed (roughly a third of a backward pass saved) and no
        ``.grad`` is written. Without autograd's batch gradient to check against, the
        autograd graph is checked instead: every edge into a trainable parameter must lie
        inside a captured module call. Requires quantity="gram".
        """
        if GradientEdge is None:
            raise RuntimeError(
                f"GramCapture.backward() needs torch.autograd.graph.GradientEdge, which torch "
                f"{torch.__version__} lacks; call loss.backward() inside the capture instead."
            )
        if self.quantity != "gram":
            raise ValueError(
                "GramCapture.backward() needs quantity='gram'; squared norms are checked "
                "against autograd's batch gradient, so call loss.backward() instead."
            )
        if not self._active or self._batch is None or loss.grad_fn is None:
            raise RuntimeError(
                "GramCapture.backward() needs a loss from a forward run inside the active "
                "capture; call it inside the `with` block, after the forward."
            )
        if self._error is not None:
            raise self._error
        batch = self._batch
        uses = list(batch.uses.values())
        reachable: set[int] = set()
        reached = parameter_edges([loss.grad_fn], set(), self._names, reachable)
        explained: set[tuple[int, int]] = set()
        for use in uses:
            roots = [edge[0] for edge in use.output_edges if edge is not None]
            explained |= parameter_edges(roots, use.input_nodes, self._names)
        outside = {param_id for node_id, param_id in reached - explained}
        if outside:
            raise used_outside_error(
                [name for name, param in self._trainable if id(param) in outside]
            )

        edges = []
        for use in uses:
            use_edges = [edge for edge in use.output_edges if edge is not None]
            use.expected = sum(id(node) in reachable for node, _ in use_edges)
            edges += [GradientEdge(*edge) for edge in use_edges]
        # Each parameter is measured as soon as its reachable uses have their backprops,
        # so they are freed during the backward pass rather than after it.
        reached_params = {param_id for _, param_id in reached}
        self._measure_early = reached_params
        try:
            if edges:  # none when no parameter is reached, which _summarize reports
                torch.autograd.grad(loss, edges, allow_unused=True)
        finally:
            self._measure_early = None
        batch.saw_backward = True
        if self._error is not None:
            raise self._error
        for _, param in self._trainable:
            if id(param) in reached_params and id(param) not in batch.values:
                self._measure_parameter(param, None)

    # -- results ---------------------------------------------------------------------------

    def captured_batches(self) -> list[CapturedBatch]:
        """Return what each backward pass measured, in order; raise a stored error first."""
        self._close_batch()
        if self._error is not None:
            raise self._error
        if not self._finished:
            raise RuntimeError(
                "no backward pass ran inside the GramCapture; call loss.backward() (or "
                "torch.autograd.grad) inside the `with` block before asking for results."
            )
        return list(self._finished)

    def results(self) -> list[GramResult]:
        """Return one GramResult per backward pass (micro-batch), in order."""
        if self.quantity != "gram":
            raise ValueError(
                f"this GramCapture measured quantity={self.quantity!r}; construct it with "
                "quantity='gram' to get Gram matrices, or use captured_batches()."
            )
        return [self._to_result(batch) for batch in self.captured_batches()]

    def result(self) -> GramResult:
        """Return the GramResult of the single backward pass inside the capture."""
        results = self.results()
        if len(results) > 1:
            raise RuntimeError(
                f"{len(results)} backward passes ran inside the GramCapture (gradient "
                "accumulation); call results() for one GramResult per micro-batch."
            )
        return results[0]

    def _to_result(self, batch: CapturedBatch) -> GramResult:
        gram = torch.stack(list(batch.values.values())).sum(dim=0)
        return GramResult(
            gram=gram,
            layer_grams=dict(batch.values),
            coverage=batch.coverage,
            granularity="example",
            loss_reduction=self.loss_reduction,
            batchnorm=self.batchnorm,
            engine="ghost",
            routes=dict(batch.routes),
            batch_size=batch.batch_size,
        )

    # -- hooks -----------------------------------------------------------------------------

    def _record_error(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        logger.debug("GramCapture stored an error: %s", error)

    def _current_batch(self) -> _MicroBatch:
        """Return the open micro-batch, closing it first if its backward already ran."""
        if self._batch is not None and self._batch.saw_backward:
            self._close_batch()
        if self._batch is None:
            self._batch = _MicroBatch(next(self._batch_ids))
        return self._batch

    def _ignores_forward(self) -> bool:
        # Forwards run during a backward pass are recomputations (activation
        # checkpointing) or our own fallback; the original forward was already captured.
        return not self._active or self._suspended or in_backward()

    def _on_model_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._ignores_forward() or not torch.is_grad_enabled():
            return
        first = next(
            (v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.ndim > 0),
            None,
        )
        if first is None:
            return
        batch = self._current_batch()
        if batch.batch_size is not None and batch.batch_size != first.shape[0]:
            # A forward of another batch size with no backward in between starts afresh.
            self._batch = batch = _MicroBatch(next(self._batch_ids))
        batch.batch_size = int(first.shape[0])

    def _on_pre_forward(self, plan: _Plan, module: nn.Module, args: tuple) -> None:
        if not self._ignores_forward():
            calls = self._current_batch().calls
            self._snapshots[id(module)].append(
                {id(descendant): calls[id(descendant)] for _, descendant in plan.descendants}
            )

    def _on_forward(
        self, plan: _Plan, module: nn.Module, args: tuple, kwargs: dict, output: Any
    ) -> None:
        if self._ignores_forward():
            return
        try:
            self._capture_use(plan, args, kwargs, output)
        except Exception as err:  # stored and raised by result(); the forward goes on
            self._record_error(err)

    def _capture_use(self, plan: _Plan, args: tuple, kwargs: dict, output: Any) -> None:
        batch = self._current_batch()
        batch.calls[id(plan.module)] += 1
        params = self._params_of_call(plan, batch)

        outputs = flatten_outputs(output)
        if outputs is None:
            raise TypeError(
                f"module {plan.name!r} ({type(plan.module).__name__}) returned "
                f"{type(output).__name__}; GramCapture supports a tensor or a tuple or list of "
                "tensors as module output. Use engine='loop' for this model."
            )
        grad_outputs = [t if t is not None and t.requires_grad else None for t in outputs]
        if not any(t is not None for t in grad_outputs):
            return  # no gradient can flow back through this call (no_grad, detached input)

        if any(t is not None and t.grad_fn is None for t in grad_outputs):
            raise TypeError(
                f"module {plan.name!r} ({type(plan.module).__name__}) returned a leaf tensor "
                "(a parameter itself); its backprop cannot be told apart from the parameter's "
                "gradient. Use engine='loop' for this model."
            )
        if plan.kernel is not None:
            if plan.kernel.check is not None:
                plan.kernel.check(plan.module)
            args, kwargs = args[:1], {}

        inputs = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        if plan.kernel is not None and (not inputs or inputs[0].ndim == 0):
            raise TypeError(
                f"module {plan.name!r} ({type(plan.module).__name__}) was called without a "
                "tensor input; its Gram kernel needs one. Use engine='loop' for this model."
            )
        size = int(inputs[0].shape[0]) if inputs and inputs[0].ndim > 0 else None
        if batch.batch_size is None:
            batch.batch_size = size
        if plan.kernel is not None and size != batch.batch_size:
            raise ValueError(
                f"module {plan.name!r} received input of shape {tuple(inputs[0].shape)}, but the "
                f"batch has {batch.batch_size} examples; per-example gradients need dimension "
                "0 of every hooked module's input to index the examples. Use engine='loop'."
            )

        use = _Use(
            plan=plan,
            args=tuple(args),
            kwargs=dict(kwargs),
            outputs=[None if t is None else (t.shape, t.dtype) for t in grad_outputs],
            params=params,
            # A kernel reads only what autograd saved too, which autograd guards against
            # in-place changes. The fallback re-runs the forward from all inputs.
            versions=[(t, t._version) for t in inputs] if plan.kernel is None else [],
            backprops=[None] * len(grad_outputs),
            remaining=len(params),
            output_edges=[None if t is None else (t.grad_fn, t.output_nr) for t in grad_outputs],
            input_nodes={id(t.grad_fn) for t in inputs if t.grad_fn is not None},
        )
        use_id = next(self._use_ids)
        batch.uses[use_id] = use
        for role, param in params.items():
            batch.pending[id(param)].append((use_id, role))
        for slot, tensor in enumerate(grad_outputs):
            if tensor is not None:
                hook = functools.partial(self._on_backprop, batch.index, use_id, slot)
                tensor.register_hook(hook)

    def _params_of_call(self, plan: _Plan, batch: _MicroBatch) -> dict[str, nn.Parameter]:
        """Return the parameters one call of ``plan.module`` contributes gradients to."""
        params = dict(plan.params)
        if plan.kernel is None:
            before = self._snapshots[id(plan.module)].pop()
            for relative, descendant in plan.descendants:
                if batch.calls[id(descendant)] != before[id(descendant)]:
                    continue
                # Not called during this forward, so its parameters are used (if at all)
                # by this module's own code, and the fallback differentiates them here.
                for role, param in descendant._parameters.items():
                    if param is not None and param.requires_grad:
                        params[f"{relative}.{role}"] = param
        return params

    def _on_backprop(self, batch_index: int, use_id: int, slot: int, grad: torch.Tensor) -> None:
        if not self._active or self._suspended:
            return
        batch = self._batch
        use = batch.uses.get(use_id) if batch is not None and batch.index == batch_index else None
        if use is None or use.backprops[slot] is not None or use.terms is not None:
            self._record_error(
                RuntimeError(
                    "a backward pass ran through a forward whose gradients were already "
                    "measured (retain_graph=True, or a graph from an earlier micro-batch). "
                    "GramCapture needs one backward per forward."
                )
            )
            return
        use.backprops[slot] = grad
        use.filled += 1
        batch.saw_backward = True
        if self._measure_early is not None:
            try:
                self._measure_ready(batch, use)
            except Exception as err:  # stored and raised by backward()
                self._record_error(err)

    def _measure_ready(self, batch: _MicroBatch, use: _Use) -> None:
        """Measure each parameter of ``use`` whose reachable uses all have their backprops."""
        for param in use.params.values():
            if id(param) not in self._measure_early or id(param) in batch.values:
                continue
            entries = batch.pending.get(id(param), [])
            if all(batch.uses[other].filled >= batch.uses[other].expected for other, _ in entries):
                self._measure_parameter(param, None)

    def _on_param_grad(self, param: nn.Parameter, grad: torch.Tensor) -> None:
        if not self._active or self._suspended:
            return
        try:
            self._measure_parameter(param, grad)
        except Exception as err:  # stored and raised by result(); the backward goes on
            self._record_error(err)

    def _measure_parameter(self, param: nn.Parameter, grad: torch.Tensor | None) -> None:
        """Turn the uses of ``param`` into its Gram term (or squared norms) and free them.

        ``grad`` is the batch gradient autograd delivered, for the check; None after
        ``backward()``, which checked the graph instead.
        """
        name = self._names[id(param)]
        batch = self._batch
        if batch is None or id(param) in batch.values or name in batch.unseen:
            raise RuntimeError(
                f"parameter {name!r} received a gradient from a backward pass with no "
                "matching forward inside the GramCapture (forward run before entering, or "
                "two backward passes through one forward). Run the forward inside the block."
            )
        batch.saw_backward = True

        terms: list[Term] = []
        fallback = False
        for use_id, role in batch.pending.pop(id(param), []):
            use = batch.uses[use_id]
            if any(backprop is not None for backprop in use.backprops):
                # Popped, so the term's tensors are freed once this parameter is measured.
                terms.append(self._terms_of(use).pop(role))
                fallback = fallback or use.plan.kernel is None
            use.remaining -= 1
            if use.remaining == 0:
                del batch.uses[use_id]
        if not terms:
            batch.unseen.append(name)  # reported for all parameters at once by _summarize
            return

        term = combine_terms(terms)
        if term.batch_size != batch.batch_size:
            raise ValueError(
                f"parameter {name!r} has per-example gradients for {term.batch_size} examples, "
                f"but the batch has {batch.batch_size}. Per-example gradients need every "
                "module input to be batch-first. Use engine='loop' for this model."
            )
        route = choose_route(term.cost(self.quantity == "sq_norms"), override=self.route)

        with torch.no_grad():
            if grad is not None:
                dense = grad.to_dense() if grad.is_sparse else grad
                flat = dense.reshape(-1)
                batch.batch_sq_norms[id(param)] = torch.dot(flat, flat)
            if self.quantity == "gram":
                value = term.gram(route)
                if grad is None:
                    batch.batch_sq_norms[id(param)] = value.sum()  # ‖Σ_i g_i‖², not a check
                    batch.checked.add(id(param))
            else:
                value = term.sq_norms(route)
                # Without the Gram's sum, the check projects both sides on u ⊗ v instead.
                left, right, norms = probe_vectors(tuple(param.shape), grad.dtype, grad.device)
                ours, ours_scale = term.probe(left, right)
                reference = left @ dense.reshape(left.numel(), right.numel()) @ right
                batch.probes[id(param)] = (ours, ours_scale, reference, norms)
        batch.values[id(param)] = value
        batch.routes[id(param)] = "func-fallback" if fallback else route

    def _terms_of(self, use: _Use) -> dict[str, Term]:
        if use.terms is None:
            for tensor, version in use.versions:
                if tensor._version != version:
                    raise RuntimeError(
                        f"the input of module {use.plan.name!r} was modified in place after "
                        "its forward, so its activations are lost. Avoid in-place operations "
                        "on inputs of layers with trainable parameters, or use engine='loop'."
                    )
            if use.plan.kernel is not None:
                use.terms = use.plan.kernel.terms(use.plan.module, use.args[0], use.backprops[0])
            else:
                self._suspended = True
                try:
                    use.terms = func_fallback_terms(
                        use.plan.module, use.args, use.kwargs, use.backprops, use.outputs,
                        use.params, self._batch.batch_size,
                    )
                finally:
                    self._suspended = False
            use.args, use.kwargs = (), {}
        return use.terms

    # -- closing a micro-batch -------------------------------------------------------------

    def _close_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None or not batch.saw_backward or self._error is not None:
            return
        try:
            self._finished.append(self._summarize(batch))
        except Exception as err:
            self._record_error(err)

    def _summarize(self, batch: _MicroBatch) -> CapturedBatch:
        if batch.unseen:
            raise used_outside_error([name for name, _ in self._trainable if name in batch.unseen])
        if not batch.values:
            raise RuntimeError(
                "the backward pass reached no trainable parameter; check that the loss "
                "depends on the model's outputs."
            )
        dtypes = {id(param): param.dtype for _, param in self._trainable}
        mismatched = [
            self._names[param_id]
            for param_id in batch.values
            if param_id not in batch.checked
            and not self._matches_batch_gradient(batch, param_id, dtypes[param_id])
        ]
        if mismatched:
            raise RuntimeError(
                f"the per-example gradients of {mismatched} do not sum to the batch gradient "
                "autograd computed, so part of each gradient was missed: a parameter used "
                "outside its module's forward, a module whose output is modified before its "
                "backprop is taken, or another hook changing the gradient. Use engine='loop', "
                "or check_engine(...) to compare engines on this model."
            )
        order = [(name, id(param), param) for name, param in self._trainable]
        included = [(name, pid, p) for name, pid, p in order if pid in batch.values]
        return CapturedBatch(
            quantity=self.quantity,
            batch_size=int(batch.batch_size),
            values={name: batch.values[pid].cpu() for name, pid, _ in included},
            batch_sq_norms={
                name: batch.batch_sq_norms[pid].to(torch.float64).cpu() for name, pid, _ in included
            },
            routes={name: batch.routes[pid] for name, pid, _ in included},
            coverage=Coverage(
                included=tuple(name for name, _, _ in included),
                frozen=self._frozen,
                unused=tuple(name for name, pid, _ in order if pid not in batch.values),
                included_numel=sum(p.numel() for _, _, p in included),
                trainable_numel=sum(p.numel() for _, p in self._trainable),
            ),
        )

    def _matches_batch_gradient(
        self, batch: _MicroBatch, param_id: int, dtype: torch.dtype
    ) -> bool:
        batch_sq_norm = float(batch.batch_sq_norms[param_id])
        if self.quantity == "gram":
            return gram_matches(batch.values[param_id], batch_sq_norm, dtype)
        ours, ours_scale, reference, norms = batch.probes[param_id]
        reference_scale = float(norms) * math.sqrt(batch_sq_norm)
        return probe_matches(
            float(ours), float(ours_scale), float(reference), reference_scale, dtype
        )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}."
        )
