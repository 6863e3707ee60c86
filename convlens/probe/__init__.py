"""``Probe``: the one owner of the hooks convlens puts on a model.

Every capture goes through it — the journey, every CAM, feature visualisation, dataset
examples, the layer table and the default-layer search — so hooks are registered in one place
and always removed (in ``finally``), also when the forward raises.  TorchCAM's idea.

Views get grids: every output is read by :func:`classify` as channels-first, channels-last
(Swin stages, ConvNeXt's norms and MLPs) or patch tokens (prefix tokens dropped, the patch grid
from the model: :func:`token_info`) and handed over as ``(N, C, H, W)``; gradients are mapped the
same way. An output that reads as no grid is stored as it is and its reason kept in
``.layouts`` (the layer table refuses it; the CAM forward raises a ``LayerError``).

A probe is a context manager: the hooks live inside the ``with`` block.  Run the model
yourself, or with :meth:`Probe.run`, which also applies the options that shape the forward.

Options (all keyword, all off by default):

``gradients``   record the gradient flowing into each output during a backward (``.gradients``).
``clone``       names (or ``True``: all) whose outputs are stored as copies, for outputs that
                later code modifies in place (see ``LayerTable.inplace_mutated``).
``detach``      store outputs detached (default) or as they are (to differentiate through them).
``transform``   ``(name, tensor) -> tensor`` applied to what is stored (e.g. select channels).
``keep``        ``"last"`` (default) or ``"first"``: which call of a module used twice is kept.
``graph``       the CAM forward: the model runs under ``inference_mode`` up to the first probed
                layer (as a plain prediction does); that layer's output becomes a leaf that
                requires grad, and the graph is recorded from there on (:meth:`run` only).
                If a tensor made before the layer is needed by the backward (a skip connection
                into a product), :meth:`run` runs once more with the early part under
                ``no_grad``.  Outputs must be single tensors; downstream gets a copy, so later
                in-place ops leave the record intact.
``replace``     ``(name, output) -> new output``: what the model continues with (Ablation-CAM).
``stop``        :meth:`run` stops the forward once every probed layer has been recorded
                (nothing after them is computed); it then returns ``None``.
``order``       record every call's ``(name, output shape)`` in completion order (``.order``;
                the shape is ``None`` when the output is not a tensor) and each module's first
                entry in ``.entered`` (forward pre-hooks: a container before its children).
``layers=None`` probes every named submodule (the layer table).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
>>> with Probe(net, ["0"]) as probe:
...     _ = net(torch.zeros(1, 1, 5, 5))
>>> tuple(probe.activations["0"].shape)
(1, 2, 3, 3)
>>> len(net[0]._forward_hooks)
0
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import LayerError, closest
from .layout import NCHW, Layout, TokenInfo, classify, token_info

__all__ = ["Layout", "NCHW", "Probe", "StopForward", "TokenInfo", "classify", "first_tensor", "resolve_modules",
           "token_info"]


#: activation modules that can rectify their input in place (``inplace=True``)
_INPLACE_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Hardswish,
                 nn.Hardsigmoid, nn.Mish, nn.RReLU, nn.Threshold)


class StopForward(Exception):
    """Raised inside a probe's hook when nothing after the probed layers needs computing."""


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor in a module's output (tensors, tuples, lists, dicts)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def resolve_modules(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map module paths to modules, with a clear error naming the closest paths."""
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in names:
        if not name or name not in modules:
            raise LayerError(f"unknown layer {name!r}{closest(name, [n for n in modules if n])}"
                             " (list them with `convlens layers`)", param="layer")
        out[name] = modules[name]
    return out


class Probe:
    """Context manager that records the outputs of named layers (see the module docstring)."""

    def __init__(self, model: nn.Module, layers: Iterable[str] | None = None, *, gradients: bool = False,
                 clone: bool | Iterable[str] = False, detach: bool = True,
                 transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                 keep: str = "last", graph: bool = False,
                 replace: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                 stop: bool = False, order: bool = False):
        if keep not in ("first", "last"):
            raise ValueError(f"keep must be 'first' or 'last' (got {keep!r})")
        self.model = model
        if layers is None:
            self.modules = {n: m for n, m in model.named_modules() if n}
        else:
            self.modules = resolve_modules(model, list(layers))
        self.want_gradients = gradients
        self.clone_all = clone is True
        self.clone_names = set() if isinstance(clone, bool) else set(clone)
        self.detach = detach
        self.transform = transform
        self.keep_first = keep == "first" or graph or replace is not None
        self.graph = graph
        self.replace = replace
        self.stop = stop
        self.record_order = order
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self.order: list[tuple[str, tuple[int, ...] | None]] = []
        self.entered: list[str] = []
        self._versions: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._graph_stack: contextlib.ExitStack | None = None
        #: each probed layer's :class:`Layout` (or why its output is no grid), from its first call
        self.layouts: dict[str, Layout | str | None] = {}
        self._input: tuple[int, tuple[int, int]] | None = None  # (batch, (H, W)) of the model's input
        self._info: TokenInfo | None = None
        self._downstream: dict[str, tuple[torch.Tensor, Layout]] = {}

    @property
    def layers(self) -> list[str]:
        return list(self.modules)

    # -- hooks -------------------------------------------------------------
    def _pre_hook(self, name: str):
        seen: set[str] = set()

        def pre_hook(_module, _inputs):
            if name not in seen:  # entry order: a container comes before its children
                seen.add(name)
                self.entered.append(name)

        return pre_hook

    def _root_pre_hook(self, _module, args, kwargs=None):
        x = first_tensor(list(args) + list((kwargs or {}).values()))
        if x is not None and x.dim() == 4:
            self._input = (int(x.shape[0]), (int(x.shape[-2]), int(x.shape[-1])))

    def _layout(self, name: str, t: torch.Tensor) -> Layout | str | None:
        """The layout of layer ``name``'s output ``t`` (a reason string when it is no grid; None
        when the model's input was not an image batch)."""
        if self._input is None:
            return None
        if self._info is None:
            self._info = token_info(self.model)
        lay = classify(self.modules[name], t, *self._input, self._info)
        self.layouts.setdefault(name, lay)
        return lay

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            t = first_tensor(output)
            lay = self._layout(name, t) if t is not None else None
            if self.record_order:
                shape = None
                if isinstance(output, torch.Tensor):
                    shape = tuple(lay.to_grid(output).shape[1:]) if isinstance(lay, Layout) else tuple(output.shape[1:])
                self.order.append((name, shape))
            if self.keep_first and name in self.activations:
                return None
            if self.graph or self.replace is not None:
                return self._graph_hook(name, output, lay)
            if t is None:
                return None
            grid = lay if isinstance(lay, Layout) else NCHW  # no grid: stored as it is (the table notes why)
            if self.want_gradients and t.requires_grad:
                t.register_hook(lambda g, n=name: self.gradients.__setitem__(n, grid.to_grid(g)))
            view = grid.to_grid(t.detach() if self.detach else t)
            kept = view
            if self.transform is not None:
                kept = self.transform(name, view)
            elif self.clone_all or name in self.clone_names:
                kept = view.clone()
            if kept is not view and isinstance(kept, torch.Tensor):  # a copy: :meth:`run` checks for an in-place ReLU
                self._downstream[name] = (view, grid)
            self.activations[name] = kept
            if not kept.is_inference():  # inference tensors keep no version counter (nor can be changed in place later)
                self._versions[name] = kept._version
            if self.stop and len(self.activations) == len(self.modules):
                raise StopForward
            return None

        return hook

    def _graph_hook(self, name: str, output: Any, lay: Layout | str | None):
        if not isinstance(output, torch.Tensor):
            raise LayerError(f"layer {name!r} returns {type(output).__name__}, not a feature-map tensor; "
                             "choose a layer whose output is one tensor", param="layer")
        if isinstance(lay, str):
            raise LayerError(f"layer {name!r} cannot be read as a spatial grid: {lay}; "
                             "choose another with `convlens layers`", param="layer")
        lay = lay or NCHW
        if self.replace is not None:
            grid = self.replace(name, lay.to_grid(output))
            self.activations[name] = grid
            return lay.from_grid(grid, output)
        if self.graph and self.want_gradients and not torch.is_grad_enabled() and self._graph_stack is not None:
            # From here on, record the graph: the probed activation (as a grid) is its leaf.
            self._graph_stack.enter_context(torch.inference_mode(False))
            self._graph_stack.enter_context(torch.enable_grad())
            src = output.clone() if output.is_inference() else output.detach()
            grid = lay.to_grid(src) if lay.kind == "nchw" else lay.to_grid(src).clone()
            grid.requires_grad_(True)
        else:
            grid = lay.to_grid(output)
        self.activations[name] = grid
        down = lay.from_grid(grid, output)
        if lay.kind != "tokens" or not lay.prefix:
            down = down.clone()  # later in-place ops (timm's activations) must not touch the record
        self._downstream[name] = (down, lay)
        return down

    def _inplace_activations(self) -> None:
        """A probed channels-first output that the model then changes in place by a ReLU (DenseNet's
        ``F.relu(features, inplace=True)`` after ``features.norm5``): the record becomes the values
        the next layer sees; gradients stay those flowing into the layer's output (through the
        ReLU), as pytorch-grad-cam computes them.  The record's consumer is our copy (whose
        backward saves nothing), so rewriting the record's values leaves the backward intact."""
        for name, (down, lay) in self._downstream.items():
            rec = self.activations.get(name)
            if lay.kind != "nchw" or rec is None or rec.shape != down.shape or self._activation_module_after(name):
                continue
            now, was = down.detach(), rec.detach()
            if not torch.equal(now, was) and torch.equal(now, was.clamp_min(0)):
                if rec.requires_grad:  # the leaf keeps its place in the graph, now holding the values seen
                    with torch.no_grad():
                        rec.copy_(now)
                else:
                    self.activations[name] = now

    def _activation_module_after(self, name: str) -> bool:
        """Whether an in-place activation *module* follows layer ``name`` among its siblings
        (ResNet's ``bn1`` then ``relu``): the rectified values are then that module's own output, and
        ``name`` keeps its values; only a functional in-place ReLU (DenseNet's) has no layer of its own."""
        parent_name, _, own = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        names = [n for n, _ in parent.named_children()]
        after = names[names.index(own) + 1:] if own in names else []
        return any(isinstance(m, _INPLACE_ACTS) and getattr(m, "inplace", False)
                   for n, m in parent.named_children() if n in after)

    def _inplace_copies(self) -> None:
        """The plain forward's counterpart of :meth:`_inplace_activations`: a copy kept of an output
        that the model then rectified in place (DenseNet's ``features``) is replaced by the values
        the next layer saw (the transform applied to them again)."""
        for name, (view, lay) in list(self._downstream.items()):
            kept = self.activations.get(name)
            if lay.kind != "nchw" or kept is None or self._activation_module_after(name):
                continue
            now = self.transform(name, view) if self.transform is not None else view.clone()
            if now.shape == kept.shape and not torch.equal(now, kept) and torch.equal(now, kept.clamp_min(0)):
                self.activations[name] = now
        self._downstream.clear()

    def __enter__(self) -> "Probe":
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._root_pre_hook, with_kwargs=True))
            for name, module in self.modules.items():
                if self.record_order:
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()
        self._downstream.clear()  # no reference to the model's outputs outlives the block

    def clear(self) -> None:
        self.activations.clear()
        self.gradients.clear()
        self.order.clear()
        self.entered.clear()
        self._versions.clear()
        self._downstream.clear()

    def mutated(self) -> set[str]:
        """Names whose stored output was modified in place after it was recorded (known only for
        outputs recorded outside ``torch.inference_mode``: the layer table records without it)."""
        return {n for n, t in self.activations.items() if n in self._versions and t._version != self._versions[n]}

    # -- running -----------------------------------------------------------
    def run(self, x: torch.Tensor) -> Any:
        """Run the model on ``x`` with the probe's options; returns its output (``None`` if stopped).

        With ``graph``: the early layers run under ``inference_mode`` (or ``no_grad`` when an
        inference tensor turns out to be needed by the backward), the graph from the first
        probed layer on, and a :class:`~convlens.errors.LayerError` names a probed layer the
        forward never reached.
        """
        if not self._handles:
            with self:
                return self.run(x)
        if self.graph:
            try:
                out = self._run_graph(x, inference=True)
            except RuntimeError as exc:
                if "Inference tensors" not in str(exc):
                    raise
                out = self._run_graph(x, inference=False)
        else:
            self.clear()
            try:
                out = self.model(x)
            except StopForward:
                return None
            self._inplace_copies()
        missing = [n for n in self.modules if n not in self.activations]
        if missing and (self.graph or self.stop or self.replace is not None):
            raise LayerError(f"layer {missing[0]!r} is not used by the model's forward pass; "
                             "pick another with `convlens layers`", param="layer")
        return out

    def _run_graph(self, x: torch.Tensor, inference: bool) -> Any:
        self.clear()
        early = torch.inference_mode() if inference else torch.no_grad()
        try:
            # the hook of the first probed layer switches the graph on (inside ``early``)
            with torch.inference_mode(False), early, contextlib.ExitStack() as self._graph_stack:
                out = self.model(x)
            self._inplace_activations()
            return out
        finally:
            self._graph_stack = None
