"""What the kernels lab returns: each computed :class:`Stage`, the :class:`KernelResult` of one
kernel and the :class:`KernelGallery` of several, with their figures and files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...render.files import OutDir, Saved, safe_stem
from ...render.kernels_fig import render_kernel_gallery, render_kernels
from ...view import View
from .arithmetic import Settings


@dataclass
class Stage:
    """One computed stage of the kernels lab.

    Attributes:
        label: what the stage did (``"conv 1"``, ``"max pool 2x2"``).
        tensor: ``(C, h, w)`` float32, the stage's output.
        shape: ``(h, w)``.
        kind: ``"conv"`` or ``"pool"``.
        arithmetic: how the shape was computed (``"9x9 * 3x3 (valid, stride 1) -> 7x7"``).
    """

    label: str
    tensor: torch.Tensor
    shape: tuple[int, int]
    kind: str = "conv"
    arithmetic: str = ""

    def stats(self) -> dict[str, float]:
        """Min, max, mean and energy (sum of squares) of the stage's values."""
        t = self.tensor.double()
        return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()),
                "energy": float((t * t).sum())}


@dataclass
class KernelResult(View):
    """What :func:`~convlens.lens.kernels.apply_kernel` returns: the input, the kernel and every stage.

    Attributes:
        input: ``(C, H, W)`` float32, the image as convolved (pixels in [0, 1] or numbers).
        kernel_name: the kernel's canonical name, ``"custom"`` for a matrix.
        kernel: the 2-D float64 matrix.
        stages: every convolution and pooling stage, in order (the input is ``input``).
        settings: the checked settings (colour, stride, padding, repeats, pooling).
        values: ``"pixels"`` (an image read as 0..1) or ``"numbers"`` (an array convolved as it is).

    Examples:
        >>> from convlens.lens.kernels import apply_kernel, demo_image
        >>> r = apply_kernel(demo_image(), "vertical", pool="max")
        >>> r.shapes, r.stages[-1].label
        ([(9, 9), (7, 7), (3, 3)], 'max pool 2x2')
    """

    input: torch.Tensor
    kernel_name: str
    kernel: np.ndarray
    stages: list[Stage]
    settings: Settings = field(default_factory=Settings)
    source: str | None = field(default=None, repr=False)
    #: ``"pixels"`` (an image read as 0..1) or ``"numbers"`` (an array convolved as it is)
    values: str = "pixels"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of the input and then of every stage."""
        return [tuple(self.input.shape[-2:])] + [s.shape for s in self.stages]

    @property
    def output(self) -> torch.Tensor:
        """The last stage's tensor ``(C, h, w)``."""
        return self.stages[-1].tensor

    def energy(self, stage: int = -1) -> float:
        """Sum of squared values of one stage (default: the last); 0 means no response."""
        return self.stages[stage].stats()["energy"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: kernel, settings, shapes, arithmetic, stage statistics (pure)."""
        kh, kw = self.kernel.shape
        cfg = self.settings
        out: dict[str, Any] = {
            "kernel": {"name": self.kernel_name, "size": [kh, kw], "matrix": self.kernel.tolist()},
            "color": cfg.color,
            "channels": int(self.input.shape[0]),
            "stride": cfg.stride,
            "padding": cfg.padding,
            "repeat": cfg.repeat,
            "pool": None if cfg.pool is None else {
                "type": cfg.pool, "size": cfg.pool_size, "stride": cfg.pool_stride},
            "input": {"shape": list(self.shapes[0]), "values": self.values,
                      "min": float(self.input.min()), "max": float(self.input.max())},
            "stages": [{"label": s.label, "kind": s.kind, "shape": list(s.shape),
                        "arithmetic": s.arithmetic, **s.stats()} for s in self.stages],
            "shapes": [list(s) for s in self.shapes],
            "arithmetic": [s.arithmetic for s in self.stages],
        }
        if self.source is not None:
            out["image"] = self.source
        return out

    def title(self) -> str:
        """The figure's title: kernel, padding, stride and the chain of shapes."""
        cfg = self.settings
        pad = cfg.padding if isinstance(cfg.padding, str) else f"pad {cfg.padding}"
        chain = " → ".join(f"{h}x{w}" for h, w in self.shapes)
        return f"{self.kernel_name} kernel, {pad} padding, stride {cfg.stride}:  {chain}"

    def figure(self, **_opts: Any) -> Image.Image:
        """The side-by-side picture: input | kernel | every stage, shapes in the titles."""
        return render_kernels(self.input.numpy(), self.kernel, self.kernel_name,
                              [(s.label, s.tensor.numpy()) for s in self.stages], title=self.title(),
                              input_pixels=self.values == "pixels")

    def save(self, out_dir: str | Path, **_opts: Any) -> Saved:
        """Write ``kernels.png`` (role ``figure``), ``kernel.npy`` (``kernel``) and one
        ``NN_label.npy`` per stage (``stage``, ``(C, h, w)`` float32) under ``out_dir``,
        each atomically; one record per stage names its file."""
        out = OutDir(out_dir)
        out.png("figure", "kernels.png", self.figure())
        out.npy("kernel", "kernel.npy", self.kernel)
        for i, stage in enumerate(self.stages, start=1):
            path = out.npy("stage", f"{i:02d}_{stage_key(stage.label)}.npy", stage.tensor.numpy())
            out.record(stage=stage.label, key=stage_key(stage.label), file=str(path))
        return out.saved()


def stage_key(label: str) -> str:
    """A stage label as a file-name key: ``"max pool 2x2"`` -> ``"max_pool_2x2"``.

    Args:
        label: the stage's label (:attr:`Stage.label`).

    Returns:
        str: the label in lower case, safe as part of a file name.
    """
    return safe_stem(label.lower(), "stage")


@dataclass
class KernelGallery(View):
    """Several kernels on one image (what :func:`~convlens.lens.kernels.apply_kernels` returns):
    one row per kernel in one figure, ``results`` the :class:`KernelResult` of each."""

    results: list[KernelResult]

    @property
    def keys(self) -> list[str]:
        """A distinct file-name key per kernel: its name, ``custom_2`` for a second custom one."""
        out: list[str] = []
        for r in self.results:
            base = stage_key(r.kernel_name)
            key, n = base, 1
            while key in out:
                n += 1
                key = f"{base}_{n}"
            out.append(key)
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"kernels": [each result's to_dict() with its "key"], "input": ...}`` (pure)."""
        rows = [{"key": k, **r.to_dict()} for k, r in zip(self.keys, self.results)]
        return {"kernels": rows, "input": rows[0]["input"], "image": self.results[0].source}

    def figure(self, **_opts: Any) -> Image.Image:
        first = self.results[0]
        rows = [(r.kernel_name, r.kernel, [(s.label, s.tensor.numpy()) for s in r.stages]) for r in self.results]
        chain = " → ".join(f"{h}x{w}" for h, w in first.shapes)
        cfg = first.settings
        pad = cfg.padding if isinstance(cfg.padding, str) else f"pad {cfg.padding}"
        return render_kernel_gallery(first.input.numpy(), rows, input_pixels=first.values == "pixels",
                                     title=f"{len(rows)} kernels, {pad} padding, stride {cfg.stride}:  {chain}")

    def save(self, out_dir: str | Path, **_opts: Any) -> Saved:
        """Write ``kernels.png`` (role ``figure``), then per kernel ``KEY_kernel.npy``
        (``kernel``) and ``KEY_NN_label.npy`` per stage (``stage``); one record per stage."""
        out = OutDir(out_dir)
        out.png("figure", "kernels.png", self.figure())
        for key, r in zip(self.keys, self.results):
            out.npy("kernel", f"{key}_kernel.npy", r.kernel)
            for i, stage in enumerate(r.stages, start=1):
                path = out.npy("stage", f"{key}_{i:02d}_{stage_key(stage.label)}.npy", stage.tensor.numpy())
                out.record(kernel=r.kernel_name, key=f"{key}_{stage_key(stage.label)}", stage=stage.label,
                           file=str(path))
        return out.saved()
