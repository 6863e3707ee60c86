"""One result contract for every view result (convlens/view.py).

Each result the library's verbs return is a ``View``: ``figure()`` is a PIL image, ``to_dict()``
is the same before and after ``save()``, ``save()`` returns one ``Saved`` whose files exist, and
``_repr_png_`` is a PNG.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl
from convlens.view import Saved, View

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return cl.load_model(net, input_size=(3, 32, 32), class_names=["a", "b", "c"])


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("contract") / "pic.png"
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
    return p


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("contract_run") / "run"
    return cl.train("digits", arch="conv8-pool-fc16", epochs=1, batch_size=128, out=str(out), progress=False)


def _journey(m, pic, _run):
    return cl.journey(m, [pic, pic])


def _explain(m, pic, _run):
    return cl.explain(m, [pic], method="gradcam,eigencam", target=["a", "b"])


def _factorize(m, pic, _run):
    return cl.factorize(m, [pic, pic], k=2)


def _kernels(_m, pic, _run):
    return cl.kernels.apply_kernel(pic, "sobel-x", pool="max")


def _kernel_gallery(_m, pic, _run):
    return cl.kernels.apply_kernels(pic, ["sobel-x", "emboss"], pool="max")


def _visualize(m, _pic, _run):
    return cl.visualize(m, "3", channels="0-1", steps=2)


def _filters(m, _pic, _run):
    from convlens.lens.filters import filters

    return filters(m, "0")


def _examples(m, pic, _run):
    from convlens.lens.examples import dataset_examples

    return dataset_examples(m, "3", "0-1", [pic, pic, pic], n=2)


def _evaluation(_m, _pic, run):
    return cl.evaluate(run.path if hasattr(run, "path") else run, top_n=2)


BUILDERS = [_journey, _explain, _factorize, _kernels, _kernel_gallery, _visualize, _filters, _examples, _evaluation]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda f: f.__name__.strip("_"))
def test_every_view_result_keeps_the_contract(build, tiny, picture, digits_run, tmp_path):
    result = build(tiny, picture, digits_run)
    assert isinstance(result, View), type(result)
    fig = result.figure()
    assert isinstance(fig, Image.Image) and fig.width > 0 and fig.height > 0
    before = json.dumps(result.to_dict(), sort_keys=True, default=str)
    saved = result.save(tmp_path / "out")
    assert isinstance(saved, Saved)
    assert saved.dir == tmp_path / "out"
    paths = saved.paths()
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert all(tmp_path / "out" in p.parents for p in paths)
    assert not list((tmp_path / "out").rglob("*.tmp")), "a temporary file was left behind"
    assert json.dumps(result.to_dict(), sort_keys=True, default=str) == before, "to_dict changed after save"
    png = result._repr_png_()
    assert isinstance(png, bytes) and png.startswith(PNG)


def test_explain_always_returns_one_type_with_a_methods_axis(tiny, picture):
    one = cl.explain(tiny, picture, method="gradcam")
    two = cl.explain(tiny, picture, method="gradcam,eigencam")
    assert type(one) is type(two)
    assert two.methods == ["gradcam", "eigencam"] and one.methods == ["gradcam"]
    sel = two["eigencam"]
    assert type(sel) is type(two) and sel.methods == ["eigencam"]
    assert torch.equal(sel.heatmaps, two.maps[1])
    assert two.maps.shape[:3] == (2, 1, 1)
