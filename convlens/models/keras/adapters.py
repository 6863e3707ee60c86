"""Keras layers as torch modules that take and give ``(N, C, H, W)``.

On the torch backend a Keras layer *is* a ``torch.nn.Module``, but a Keras model does not register
its layers as torch children (they sit in Keras' own tracked lists), and its feature maps are
channels-last ``(N, H, W, C)``. So a loaded model is wrapped, not converted: each Keras layer gets
one small adapter module (:class:`KerasLayer`) named as Keras names it (``conv2d_1``,
``max_pooling2d``; ``base.block5_conv3`` inside a nested base model) that permutes 4-D tensors to
channels-last before the Keras layer runs and back after it. The model's own graph runs over the
adapters (Sequential: in order; Functional: Keras' ``_run_through_graph`` with each operation mapped
to its adapter), so the tensors *between* layers are ``(N, C, H, W)`` and every view captures them
through :class:`~convlens.probe.Probe` unchanged: the Probe stays the one hook owner and never learns
about layouts. The permutes are views; Keras' torch convolutions transpose to ``NCHW`` themselves, so
the round trip copies nothing.

* Parameters: each adapter registers its layer's own Keras variables (the very
  ``torch.nn.Parameter`` objects Keras computes with), so counts equal Keras' ``model.summary()``
  and in-place changes (``convlens sanity``) change the Keras model. A ``Conv2D`` adapter is an
  ``nn.Conv2d`` whose ``weight`` reads the Keras kernel ``(kh, kw, in, out)`` as
  ``(out, in, kh, kw)``, so the filter views work as on torch models.
* Scores: a model ending in softmax (a ``Dense(activation="softmax")``, or an ``Activation`` /
  ``Softmax`` layer) gives its pre-softmax scores (the Dense without its activation), so CAMs and
  attributions use the score the Grad-CAM paper defines, and ``LensModel.probabilities`` (a softmax
  of them) equals Keras' probabilities. A one-unit sigmoid output ``z`` becomes the two scores
  ``(-z/2, z/2)``: softmax gives ``1 - p, p``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .load import is_model


def to_nhwc(obj: Any) -> Any:
    """Channels-first feature maps as Keras layers take them.

    Args:
        obj: a tensor, or lists, tuples and dicts holding tensors (and anything else).

    Returns:
        Any: ``obj`` with every 4-D tensor ``(N, C, H, W)`` replaced by its ``(N, H, W, C)`` view.
    """
    if isinstance(obj, torch.Tensor):
        return obj.permute(0, 2, 3, 1) if obj.dim() == 4 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_nhwc(o) for o in obj)
    if isinstance(obj, dict):
        return {k: to_nhwc(v) for k, v in obj.items()}
    return obj


def to_nchw(obj: Any) -> Any:
    """Keras' channels-last feature maps as convlens passes them on; the inverse of :func:`to_nhwc`.

    Args:
        obj: a tensor, or lists, tuples and dicts holding tensors (and anything else).

    Returns:
        Any: ``obj`` with every 4-D tensor ``(N, H, W, C)`` replaced by its ``(N, C, H, W)`` view.
    """
    if isinstance(obj, torch.Tensor):
        return obj.permute(0, 3, 1, 2) if obj.dim() == 4 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_nchw(o) for o in obj)
    if isinstance(obj, dict):
        return {k: to_nchw(v) for k, v in obj.items()}
    return obj


def _param_name(name: str, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "w"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def _keras_params(op: Any) -> list[tuple[str, nn.Parameter, bool]]:
    """(name, the Keras variable's torch Parameter, trainable) for each weight of a layer."""
    out = []
    trainable_ids = {id(v) for v in getattr(op, "trainable_weights", [])}
    for v in getattr(op, "weights", []):
        p = getattr(v, "value", None)
        if isinstance(p, nn.Parameter):
            out.append((v.name, p, id(v) in trainable_ids))
    return out


class _Callable:
    """Holds a Keras operation out of torch's sight (a plain attribute is not a child module)."""

    def __init__(self, op: Any):
        self.op = op


class KerasLayer(nn.Module):
    """One Keras layer as a torch module: ``(N, C, H, W)`` in and out, the layer's own Keras
    variables as its parameters (those Keras does not train with ``requires_grad=False``).

    Args:
        op: the Keras layer (or operation).
        scores: how a final softmax/sigmoid layer gives pre-activation scores (see the module
            docstring): ``"skip"`` (the input passes), ``"linear"`` / ``"linear_sigmoid"`` (a Dense
            without its activation), ``"log"`` or ``"logit"``; None runs the layer as it is.
    """

    keras_class = "Layer"

    def __init__(self, op: Any, scores: str | None = None):
        super().__init__()
        self._op = _Callable(op)
        self.keras_name = str(getattr(op, "name", type(op).__name__))
        self.keras_class = type(op).__name__
        self.scores = scores
        self._training_arg = bool(getattr(op, "_call_has_training_arg", False))
        taken: set[str] = set(self._parameters) | set(self._modules)
        self.param_names: dict[str, str] = {}
        for vname, p, trainable in _keras_params(op):
            if not trainable:
                p.requires_grad_(False)  # frozen in Keras (layer.trainable = False, BN statistics)
            pname = _param_name(vname, taken)
            self.register_parameter(pname, p)
            self.param_names[vname] = pname

    @property
    def op(self) -> Any:
        """The Keras layer (or operation) this module runs."""
        return self._op.op

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.scores == "skip":  # the model's final Activation("softmax") / Softmax
            return args[0]
        if self._training_arg:
            kwargs.setdefault("training", False)
        args, kwargs = to_nhwc(args), to_nhwc(kwargs)
        if self.scores in ("linear", "linear_sigmoid"):
            out = self._pre_activation(*args)
        elif self.scores == "log":
            out = torch.log(self.op(*args, **kwargs).clamp_min(1e-30))
        elif self.scores == "logit":
            p = self.op(*args, **kwargs).clamp(1e-7, 1 - 1e-7)
            out = torch.log(p) - torch.log1p(-p)
        else:
            out = self.op(*args, **kwargs)
        if self.scores in ("linear_sigmoid", "logit") and isinstance(out, torch.Tensor) and out.shape[-1] == 1:
            out = torch.cat([-out / 2, out / 2], dim=-1)
        return to_nchw(out)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """A Dense layer without its activation: ``x @ kernel + bias`` on the last axis."""
        layer = self.op
        out = torch.matmul(x, layer.kernel.value if hasattr(layer.kernel, "value") else layer.kernel)
        if getattr(layer, "use_bias", False) and layer.bias is not None:
            out = out + (layer.bias.value if hasattr(layer.bias, "value") else layer.bias)
        return out


def _int_padding(padding: str, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    if padding == "same":
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))  # type: ignore[return-value]
    return (0, 0)


class KerasConv2d(nn.Conv2d):
    """A Keras ``Conv2D`` / ``DepthwiseConv2D`` as a torch ``nn.Conv2d`` that runs the Keras layer.

    ``weight`` is the Keras kernel ``(kh, kw, in, out)`` read as ``(out, in, kh, kw)``
    (depthwise ``(kh, kw, in, m)`` as ``(in * m, 1, kh, kw)``): a view, the same numbers. The
    parameters are the Keras variables themselves (``kernel``, ``bias``).

    Args:
        op: the Keras ``Conv2D`` or ``DepthwiseConv2D`` layer, built.
    """

    def __init__(self, op: Any):
        cfg = op.get_config()
        depthwise = type(op).__name__ == "DepthwiseConv2D"
        kernel = op.kernel.value
        kh, kw, cin, cout = kernel.shape
        if depthwise:
            cin, cout, groups = cin, cin * cout, cin
        else:
            groups = int(cfg.get("groups", 1) or 1)
            cin = cin * groups
        dilation = tuple(cfg.get("dilation_rate", (1, 1)))
        stride = tuple(cfg.get("strides", (1, 1)))
        super().__init__(int(cin), int(cout), (int(kh), int(kw)), stride=stride,
                         padding=_int_padding(cfg.get("padding", "valid"), (kh, kw), dilation),
                         dilation=dilation, groups=groups, bias=False, device="meta")
        del self._parameters["weight"]
        self.depthwise = depthwise
        inner = KerasLayer(op)  # runs the layer; kept out of torch's sight, its parameters are ours
        for pname, p in inner.named_parameters(recurse=False):
            self.register_parameter(pname, p)
        object.__setattr__(self, "_inner", inner)
        self.keras_name = self._inner.keras_name
        self.keras_class = self._inner.keras_class
        self.scores = None

    @property
    def op(self) -> Any:
        return self._inner.op

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        k = self.op.kernel.value
        if self.depthwise:  # (kh, kw, in, m) -> (in * m, 1, kh, kw)
            kh, kw, cin, m = k.shape
            return k.permute(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)
        return k.permute(3, 2, 0, 1)

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}, " + super().extra_repr()

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._inner(*args, **kwargs)


def _adapter_class(base: type, keras_class: str) -> type:
    """A subclass of ``base`` named after the Keras class (the layer table's Type column)."""
    key = (base, keras_class)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = type(keras_class, (base,), {"__module__": __name__, "__qualname__": keras_class})
        _CLASSES[key] = cls
    return cls


_CLASSES: dict[tuple[type, str], type] = {}


def _activation_name(op: Any) -> str:
    act = getattr(op, "activation", None)
    return str(getattr(act, "__name__", "") or "")


class KerasNet(nn.Module):
    """A Keras model (Sequential or Functional) over adapter modules named as Keras names its
    layers; ``forward`` takes and returns torch tensors with feature maps ``(N, C, H, W)``.

    Nested models (a transfer-learning base) are KerasNets themselves, their layers below them
    (``base.block5_conv3``). At the top, ``scores`` says how a softmax/sigmoid ending was
    turned into pre-activation scores (``output_activation``: ``softmax``, ``sigmoid`` or
    ``None``). ``native_layout``: Keras' own layout, for the layer table's printed shapes.

    Args:
        model: the Keras model (or a nested model inside one).
        top: whether this is the outermost model (whose ending becomes scores and whose
            one-element output list is unwrapped).
    """

    native_layout = "channels_last"

    def __init__(self, model: Any, top: bool = True):
        super().__init__()
        self._model = _Callable(model)
        self.keras_name = str(model.name)
        self.keras_class = type(model).__name__
        self.sequential = not hasattr(model, "_run_through_graph") or type(model).__name__ == "Sequential"
        self.output_activation: str | None = None
        self.top = top
        final = self._final_op(model) if top else None
        ending = self._ending(final) if final is not None else None
        self._by_id: dict[int, nn.Module] = {}
        for op in self._ops(model):
            if id(op) in self._by_id:
                continue
            scores = ending if op is final else None
            if is_model(op) and scores is None:
                mod: nn.Module = _adapter_class(KerasNet, type(op).__name__)(op, top=False)
            elif (type(op).__name__ in ("Conv2D", "DepthwiseConv2D") and scores is None
                  and getattr(op, "kernel", None) is not None):
                mod = _adapter_class(KerasConv2d, type(op).__name__)(op)
            else:
                mod = _adapter_class(KerasLayer, type(op).__name__)(op, scores=scores)
            name = _param_name(str(getattr(op, "name", "layer")), set(self._modules) | set(self._parameters))
            self.add_module(name, mod)
            self._by_id[id(op)] = mod

    @property
    def model(self) -> Any:
        """The Keras model."""
        return self._model.op

    @staticmethod
    def _ops(model: Any) -> list[Any]:
        if type(model).__name__ == "Sequential" or not hasattr(model, "_run_through_graph"):
            return list(model.layers)
        ops = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input or type(op).__name__ == "InputLayer":
                    continue
                ops.append(op)
        return ops

    @staticmethod
    def _final_op(model: Any) -> Any:
        if type(model).__name__ == "Sequential":
            return model.layers[-1] if model.layers else None
        outs = getattr(model, "outputs", None) or []
        if len(outs) != 1:
            return None
        history = getattr(outs[0], "_keras_history", None)
        return getattr(history, "operation", None) if history is not None else None

    def _ending(self, op: Any) -> str | None:
        """How the final operation's output becomes pre-activation scores (None: it already is)."""
        cls = type(op).__name__
        act = _activation_name(op)
        if cls == "Softmax" or (cls == "Activation" and act == "softmax"):
            self.output_activation = "softmax"
            return "skip"
        if cls == "Dense" and act in ("softmax", "sigmoid"):
            self.output_activation = act
            return "linear" if act == "softmax" else "linear_sigmoid"
        if act == "softmax":
            self.output_activation = "softmax"
            return "log"  # log-probabilities: softmax gives the probabilities back exactly
        if act == "sigmoid" or (cls == "Activation" and act == "sigmoid"):
            self.output_activation = "sigmoid"
            return "logit"
        if is_model(op):  # a model ending in a nested model: look inside
            return None
        return None

    def extra_repr(self) -> str:
        return f"{self.keras_name!r}, {self.keras_class}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        if self.sequential:
            x = args[0]
            for mod in self._modules.values():
                x = mod(x)
            return x
        inputs = args[0] if len(args) == 1 else list(args)
        out = model._run_through_graph(inputs, operation_fn=lambda op: self._by_id[id(op)])
        if self.top and isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]  # keras.Model(inp, [out]): one output in a list, the classifier's scores
        return out
