"""The one-line CNN spec: its grammar, its parser, and the size of the network it builds worked
out from the tokens alone (:func:`check_spec`), before anything is allocated.

The grammar (tokens joined by ``-``)::

    conv<N>[k<K>][v] 3x3 (or KxK) convolution with N filters, then ReLU; 'same' padding
                    (the output keeps the input's size), or 'valid' with a trailing ``v``
                    (no padding: 3x3 on 28x28 gives 26x26, like Keras's default)
    bn              batch norm (folded between a conv/fc and its activation when it follows one)
    relu, sigmoid, tanh
                    the activation of the conv/fc just before (``conv32-tanh``,
                    ``fc128-bn-sigmoid``; ReLU when none is given); anywhere else, a layer
    pool[<K>]       max pooling (2 by default); also maxpool<K>, avgpool<K>
    gap, gmp        global average / max pooling
    fc<N>           fully connected layer with N units, then ReLU (flattens first)
    drop<P>         dropout with probability P (0 <= P < 1)

The classifier (``fc`` to the number of classes, no activation: the loss applies the softmax) is
added at the end.  The course's Keras models as specs, on 28x28x1 with 10 classes: ``fc128``
(Flatten, Dense 128 relu, Dense 10: 101,770 parameters) and ``conv64v-pool-conv64v-pool-fc128``
(two valid 3x3 convs with 2x2 pools, 28 -> 26 -> 13 -> 11 -> 5, then Dense 128 and Dense 10:
243,786 parameters).

Transfer learning: ``effnet-lite0`` (the built-in ImageNet model) or ``timm:NAME``
(:class:`ArchInfo` ``kind="transfer"``); :mod:`convlens.models.arch` builds both kinds.

>>> parse_arch("conv32-bn-pool-gap")
ArchInfo(kind='spec', spec='conv32-bn-pool-gap', backbone=None)
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import SpecError, closest
from ..options import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIDE, MAX_LAYERS, MAX_SPEC_ACTIVATIONS, MAX_SPEC_PARAMETERS
from .weights import BUILTIN, BUILTIN_ALIASES

DEFAULT_ARCH = "conv16-bn-pool-conv32-bn-pool-conv64-bn-pool-fc128-bn-drop0.3"
#: The seed course's Keras model for the faces (three conv blocks, dense 128/64, dropout 0.2).
SEED_KERAS_ARCH = "conv32-pool-conv64-pool-conv128-pool-fc128-drop0.2-fc64-drop0.2"

GRAMMAR = ("conv<N>[k<K>][v] (e.g. conv32, conv64k5; a trailing v for valid padding: conv32v), bn, "
           "relu/sigmoid/tanh (the activation of the conv/fc before), pool[<K>]/maxpool<K>/avgpool<K>, "
           "gap, gmp, fc<N>, drop<P> (e.g. drop0.2); or effnet-lite0, timm:NAME")
TOKEN = re.compile(r"^conv(?P<conv>\d+)(?:k(?P<k>\d+))?(?P<valid>v)?$|^fc(?P<fc>\d+)$"
                    r"|^drop(?P<drop>0?\.\d+|0|1\.0*)$|^(?P<pool>maxpool|avgpool|pool)(?P<pk>\d*)$"
                    r"|^(?P<word>gap|gmp|bn)$|^(?P<act>relu|sigmoid|tanh)$")
_WORDS = ["conv32", "conv32v", "conv64k5", "bn", "pool", "maxpool2", "avgpool2", "gap", "gmp", "fc128",
          "drop0.2", "relu", "sigmoid", "tanh"]


@dataclass(frozen=True)
class ArchInfo:
    """A parsed ``arch``: ``kind`` ``"spec"`` (``spec`` the normalised token string) or
    ``"transfer"`` (``spec`` ``effnet-lite0`` or ``timm:NAME``, ``backbone`` timm's model name)."""

    kind: str  # "spec" or "transfer"
    spec: str
    backbone: str | None = None  # timm model name for transfer


def parse_arch(spec: str) -> ArchInfo:
    """Validate an ``arch`` string.

    Args:
        spec: a spec in the grammar of the module docstring, ``effnet-lite0`` (or an alias) or
            ``timm:NAME``.

    Returns:
        ArchInfo: the parsed architecture (a spec's tokens lower-cased).

    Raises:
        SpecError: ``param="arch"``, naming the bad token and its position, the closest valid
            token and the grammar.
    """
    text = str(spec).strip()
    low = text.lower()
    if low in BUILTIN_ALIASES:
        return ArchInfo("transfer", BUILTIN, "tf_efficientnet_lite0")
    if low.startswith("timm:"):
        name = text[5:].strip()
        if not name:
            raise SpecError("arch timm:NAME needs a model name, e.g. timm:resnet18", param="arch")
        return ArchInfo("transfer", f"timm:{name}", name)
    if not text:
        raise SpecError(f"arch is empty; allowed: {GRAMMAR}", param="arch")
    tokens = low.split("-")
    if len(tokens) > MAX_LAYERS:
        raise SpecError(f"arch {text[:60]!r}...: {len(tokens)} tokens, at most {MAX_LAYERS}", param="arch")
    for i, tok in enumerate(tokens):
        if not tok:
            raise SpecError(f"arch {text!r}: empty token at position {i + 1} (two '-' in a row?); allowed: {GRAMMAR}",
                            param="arch")
        m = TOKEN.match(tok)
        if not m:
            raise SpecError(f"arch {text!r}: unknown token {tok!r} at position {i + 1}"
                            f"{closest(tok, _WORDS)}; allowed: {GRAMMAR}", param="arch")
        if m.group("drop") and not 0 <= float(m.group("drop")) < 1:
            raise SpecError(f"arch {text!r}: token {tok!r}: dropout must be in [0, 1)", param="arch")
        for g, most in (("conv", MAX_CHANNELS), ("k", MAX_IMAGE_SIDE), ("fc", MAX_CHANNELS), ("pk", MAX_IMAGE_SIDE)):
            if m.group(g) and (len(m.group(g)) > 9 or int(m.group(g)) > most):  # int() refuses over 4300 digits
                raise SpecError(f"arch {text[:60]!r}: token {tok[:20]!r}: size is too large (at most {most})",
                                param="arch")
            if m.group(g) and int(m.group(g)) == 0:
                raise SpecError(f"arch {text!r}: token {tok!r}: sizes must be at least 1", param="arch")
    if not any(t.startswith(("conv", "fc")) for t in tokens):
        raise SpecError(f"arch {text!r}: needs at least one conv or fc layer", param="arch")
    return ArchInfo("spec", "-".join(tokens))


def check_spec(spec: str, input_size: Sequence[int], num_classes: int) -> tuple[int, int]:
    """The size of the network a spec builds, worked out from the tokens alone, so that nothing is
    allocated for a network that could not be built (``conv4096-conv4096-fc4096`` on a large input).

    Args:
        spec: a parsed spec (:attr:`ArchInfo.spec`).
        input_size: the input's ``(C, H, W)``.
        num_classes: the classifier's outputs.

    Returns:
        tuple[int, int]: the parameters, at least as many as the network holds (every conv channel
            and fc unit counted with a bias and a batch norm), and the most values one layer outputs
            per image.

    Raises:
        SpecError: over :data:`~convlens.options.MAX_SPEC_PARAMETERS` parameters or
            :data:`~convlens.options.MAX_SPEC_ACTIVATIONS` values in one layer's output, or an
            ``input_size`` / ``num_classes`` out of bounds.
    """
    c, h, w = check_input(input_size, num_classes)
    params, largest, spatial, flat = 0, c * h * w, True, 0
    for tok in spec.split("-"):
        m = TOKEN.match(tok)
        if m is None:
            continue
        if m.group("conv") and spatial:
            out, k = int(m.group("conv")), int(m.group("k") or 3)
            params += c * out * k * k + 3 * out
            if m.group("valid"):
                h, w = max(h - k + 1, 0), max(w - k + 1, 0)
            c = out
            largest = max(largest, c * h * w)
        elif m.group("pool") and spatial:
            k = int(m.group("pk") or 2)
            h, w = h // k, w // k
        elif m.group("word") in ("gap", "gmp") and spatial:
            spatial, flat = False, c
        elif m.group("fc"):
            if spatial:
                spatial, flat = False, c * h * w
            out = int(m.group("fc"))
            params += flat * out + 3 * out
            flat = out
            largest = max(largest, out)
        if params > MAX_SPEC_PARAMETERS or largest > MAX_SPEC_ACTIVATIONS:
            break
    params += (c * h * w if spatial else flat) * num_classes + num_classes
    if largest > MAX_SPEC_ACTIVATIONS:
        raise SpecError(f"arch {spec[:60]!r} on {input_size[1]}x{input_size[2]} inputs would have a layer of over "
                        f"{MAX_SPEC_ACTIVATIONS:,} values per image; use fewer filters or a smaller input",
                        param="arch")
    if params > MAX_SPEC_PARAMETERS:
        raise SpecError(f"arch {spec[:60]!r} on {input_size[1]}x{input_size[2]} inputs would have over "
                        f"{MAX_SPEC_PARAMETERS:,} parameters; use fewer or smaller layers, or pool before fc",
                        param="arch")
    return params, largest


def check_input(input_size: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """Check an input size and a number of classes against :mod:`convlens.options`' bounds.

    Args:
        input_size: ``(C, H, W)``, three whole numbers.
        num_classes: the number of classes.

    Returns:
        tuple[int, int, int]: ``(C, H, W)`` as ints.

    Raises:
        SpecError: naming ``input_size`` or ``num_classes``.
    """
    size = tuple(input_size)
    try:
        if len(size) != 3 or any(isinstance(v, bool) for v in size):
            raise TypeError
        c, h, w = (operator.index(v) for v in size)
    except TypeError:
        raise SpecError(f"input_size must be three whole numbers (C, H, W), got {size!r}", param="input_size") from None
    if not 1 <= c <= MAX_CHANNELS or not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise SpecError(f"input_size {[c, h, w]}: channels must be 1 to {MAX_CHANNELS}, height and width 1 to "
                        f"{MAX_IMAGE_SIDE}", param="input_size")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise SpecError(f"num_classes must be 1 to {MAX_CLASSES}, got {num_classes!r}", param="num_classes")
    return c, h, w
