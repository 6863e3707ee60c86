"""Keras models seen inside (issue 14): .h5 / .keras files through Keras 3 on its torch backend.

The fixtures in tests/fixtures/keras/ were made by TF-Keras 2 and Keras 3 on TensorFlow with
their reference outputs computed by TensorFlow (tests/fixtures/make_keras_models.py); these
tests need no TensorFlow. Skipped with a reason when Keras 3 or h5py is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.keras

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("h5py", exc_type=ImportError, reason="Keras models need h5py: pip install 'convlens[keras]'")
pytest.importorskip("keras", exc_type=ImportError, reason="Keras models need Keras 3: pip install 'convlens[keras]'")

import convlens as cl  # noqa: E402
from convlens.audit import audit  # noqa: E402
from convlens.errors import ModelError, SpecError  # noqa: E402
from convlens.lens.cam.targets import METHODS  # noqa: E402
from convlens.lens.examples import dataset_examples  # noqa: E402
from convlens.lens.filters import filters  # noqa: E402
from convlens.models.keras import KerasConv2d, read_class_names  # noqa: E402
from convlens.probe import Probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "keras"
MODELS = ["seq_mnist.h5", "rescaling_rgb.keras", "nested_transfer.h5", "nested_transfer_k3.keras"]


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def info(name: str) -> dict:
    return json.loads((FIX / f"{stem(name)}.summary.json").read_text())


def inputs(name: str) -> torch.Tensor:
    """The batch TensorFlow was fed, NCHW: 8-bit pixels (/255 unless the model rescales itself)."""
    u8 = np.load(FIX / f"{stem(name)}.inputs.npy")
    x = u8.astype(np.float32) if info(name)["rescaling"] else u8.astype(np.float32) / np.float32(255)
    return torch.from_numpy(x).permute(0, 3, 1, 2)


_CACHE: dict[str, object] = {}


def model(name: str):
    if name not in _CACHE:
        _CACHE[name] = cl.load_model(FIX / name)
    return _CACHE[name]


def pngs(name: str) -> list[str]:
    return [str(FIX / p) for p in info(name)["pngs"]]


@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_tensorflow(name):
    lm = model(name)
    with torch.no_grad():
        z = lm.module(inputs(name)).numpy()
    ref = np.load(FIX / f"{stem(name)}.logits.npy")
    assert z.shape == ref.shape
    assert np.abs(z - ref).max() <= 1e-4 * np.abs(ref).max()
    # predictions are probabilities: the softmax of the scores, equal to Keras' own output
    probs = lm.probabilities(inputs(name)).numpy()
    np.testing.assert_allclose(probs, np.load(FIX / f"{stem(name)}.probs.npy"), atol=1e-5)
    assert lm.source["output_activation"] == "softmax"


@pytest.mark.parametrize("name", MODELS)
def test_predict_on_image_files_equals_tensorflow(name):
    lm = model(name)
    preds = lm.predict(pngs(name), top_k=lm.num_classes)
    ref = np.load(FIX / f"{stem(name)}.png_probs.npy")
    for p, r in zip(preds, ref):
        got = np.zeros(lm.num_classes)
        for s in p.predictions:
            got[s.index] = s.probability
        np.testing.assert_allclose(got, r, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_layer_table_equals_keras_summary(name):
    lm = model(name)
    table = lm.layers()
    ref = info(name)
    assert (table.total_params, table.trainable_params, table.non_trainable_params) == (
        ref["totals"]["total"], ref["totals"]["trainable"], ref["totals"]["non_trainable"])
    keras_rows = [r for r in ref["layers"] if r["type"] != "InputLayer"]  # TF-Keras lists a base's Input
    names = [r.name for r in table.rows]
    assert names == [r["name"] for r in keras_rows]
    for row, want in zip(table.rows, keras_rows):
        assert row.params == want["params"], row.name
        assert row.type == want["type"]
        assert list(table.native_shape(row.output_shape)) == want["output_shape"][1:], row.name
    text = str(table)
    first = keras_rows[0]
    assert f"(None, {', '.join(map(str, first['output_shape'][1:]))})" in text  # Keras' order, batch None
    assert f"(None, {', '.join(map(str, first['output_shape'][1:]))})" in table._repr_html_()
    assert f"Total params: {ref['totals']['total']:,}" in text


def test_views_see_channels_first_maps():
    lm = model("seq_mnist.h5")
    x = inputs("seq_mnist.h5")
    with Probe(lm.module, ["conv2d", "max_pooling2d_1", "dense"]) as probe, torch.no_grad():
        lm.module(x)
    assert tuple(probe.activations["conv2d"].shape) == (4, 8, 26, 26)
    assert tuple(probe.activations["max_pooling2d_1"].shape) == (4, 16, 5, 5)
    assert tuple(probe.activations["dense"].shape) == (4, 32)
    # the (C, H, W) map is Keras' own channels-last output, permuted
    keras_model = lm.module.model
    conv = keras_model.get_layer("conv2d")
    with torch.no_grad():
        nhwc = conv(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(probe.activations["conv2d"], nhwc.permute(0, 3, 1, 2))
    assert not any(m._forward_hooks for m in lm.module.modules())


def test_conv_adapter_weight_is_the_keras_kernel():
    lm = model("seq_mnist.h5")
    conv = lm.get_layer("conv2d_1")
    assert isinstance(conv, KerasConv2d) and isinstance(conv, torch.nn.Conv2d)
    kernel = lm.module.model.get_layer("conv2d_1").kernel.value
    assert tuple(conv.weight.shape) == (16, 8, 3, 3)
    torch.testing.assert_close(conv.weight[5, 2], kernel[:, :, 2, 5])
    assert conv.weight.data_ptr() == kernel.data_ptr()  # a view: the same numbers


def _gradcam_reference(name: str) -> torch.Tensor:
    """TensorFlow's tutorial map (pre-ReLU, conv resolution), ReLU'd and upsampled to the input."""
    ref = torch.from_numpy(np.load(FIX / f"{stem(name)}.gradcam.npy"))[:, None]
    size = tuple(inputs(name).shape[-2:])
    return F.interpolate(ref.clamp_min(0), size=size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_matches_tensorflow_gradient_tape(name):
    lm = model(name)
    ref_info = info(name)
    ex = cl.explain(lm, inputs(name), "gradcam", layer=ref_info["gradcam_layer"])
    assert [t[0].index for t in ex.targets] == ref_info["gradcam_classes"]
    ours = ex.heatmaps[:, 0].float()
    ref = _gradcam_reference(name)
    for a, b in zip(ours, ref):
        if float(b.max()) <= 0:  # TF's map is negative everywhere: after the ReLU both are blank
            assert float(a.max()) == 0.0, name
            continue
        corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        assert corr >= 0.99, (name, corr)
        COMPARED.append(name)


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_before_relu_equals_tensorflow(name):
    """The tutorial's map itself (conv resolution, before the ReLU), from our activations and
    gradients at the layer: a comparison that no blank map makes trivial."""
    lm = model(name)
    ref_info = info(name)
    layer = ref_info["gradcam_layer"]
    ref = np.load(FIX / f"{stem(name)}.gradcam.npy")
    x = inputs(name)
    for i, k in enumerate(ref_info["gradcam_classes"]):
        with Probe(lm.module, [layer], gradients=True) as probe:
            scores = lm.module(x[i:i + 1].clone().requires_grad_(True))  # a frozen base: grads flow from the input
            assert int(scores[0].argmax()) == k
            scores[0, k].backward()
        act, grad = probe.activations[layer][0], probe.gradients[layer][0]
        ours = (grad.mean(dim=(1, 2))[:, None, None] * act).sum(0).numpy()
        assert ours.shape == ref[i].shape
        corr = np.corrcoef(ours.ravel(), ref[i].ravel())[0, 1]
        assert corr >= 0.999, (name, i, corr)
        assert np.abs(ours - ref[i]).max() <= 1e-3 * np.abs(ref[i]).max() + 1e-7, name


COMPARED: list[str] = []


def test_gradcam_reference_maps_were_compared():
    """Blank maps agree trivially; the Sequential and both nested models give real ones."""
    if not COMPARED:
        pytest.skip("run with the Grad-CAM tests above")
    assert {"seq_mnist.h5", "nested_transfer.h5", "nested_transfer_k3.keras"} <= set(COMPARED)


def test_gradcam_uses_the_pre_softmax_score():
    """The map at the softmax probability differs; ours follows the score (as TF's reference)."""
    lm = model("seq_mnist.h5")
    x = inputs("seq_mnist.h5")[:1]
    with torch.no_grad():
        scores = lm.module(x)
    probs = torch.from_numpy(np.load(FIX / "seq_mnist.probs.npy"))[:1]
    torch.testing.assert_close(scores.softmax(-1), probs, atol=1e-5, rtol=0)
    assert not torch.allclose(scores, probs, atol=1e-2)  # the module gives scores, not probabilities


@pytest.mark.parametrize("name", MODELS)
def test_every_view_runs(name, tmp_path):
    """journey, every explain method, visualize, filters, examples, score and audit on each fixture."""
    lm = model(name)
    images = pngs(name)
    layer = info(name)["gradcam_layer"]
    j = cl.journey(lm, images[:1])
    assert j.to_dict() and j.figure().size[0] > 0
    j.save(tmp_path / "journey")
    # every method that applies to a CNN: not the transformers' attention maps, nor FullGrad (which
    # needs nn.Conv2d / nn.BatchNorm2d biases, and says so in one line for these converted models)
    methods = [m for m in METHODS if m not in ("rollout", "chefer", "fullgrad")]
    ex = cl.explain(lm, images, ",".join(methods))
    assert ex.maps.shape[:2] == (len(methods), len(images))
    assert torch.isfinite(ex.maps).all()
    ex.save(tmp_path / "explain")
    fv = cl.visualize(lm, layer, channels=[0, 1], steps=8)
    assert fv.figure().size[0] > 0
    grid = filters(lm, layer)
    assert grid.figure().size[0] > 0
    exs = dataset_examples(lm, layer, [0, 1], images, n=2)
    assert exs.to_dict() and exs.figure().size[0] > 0
    s = cl.score(lm, images, "gradcam", metric="deletion", steps=4)
    assert s.to_dict()
    data = tmp_path / "data"
    for c in lm.class_names[:2]:
        (data / c).mkdir(parents=True)
        for i, p in enumerate(images):
            (data / c / f"{i}.png").write_bytes(Path(p).read_bytes())
    a = audit(lm, data, out=tmp_path / "audit")
    d = a.to_dict()
    assert d["images"] == 2 * len(images) and len(d["classes"]) == 2
    a.save(tmp_path / "audit_saved")
    assert a.figure().size[0] > 0


def test_journey_default_layers_are_keras_names():
    lm = model("nested_transfer.h5")
    assert lm.stage_layers() == ["base.block1_conv1", "base.block1_pool", "base.block2_conv1", "base.block2_pool"]
    lm = model("seq_mnist.h5")
    assert lm.stage_layers() == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]


def test_preprocessing_read_from_the_model():
    gray = model("seq_mnist.h5")
    assert gray.config.input_size == (1, 28, 28) and gray.config.image_mode == "L"
    assert gray.config.mean == (0.0,) and gray.config.std == (1.0,)  # pixels in [0, 1]
    rgb = model("rescaling_rgb.keras")  # Rescaling(1/255) first: fed raw 0-255 pixels
    assert rgb.config.input_size == (3, 60, 64)
    x = rgb.config.normalize(torch.ones(1, 3, 2, 2))
    assert torch.allclose(x, torch.full_like(x, 255.0))


def test_scale_mean_std_override(tmp_path):
    lm = cl.load_model(FIX / "seq_mnist.h5", scale=1 / 127.5, mean=1.0, std=1.0)
    # the model is fed pixel * scale - mean: white (255) -> 1, black (0) -> -1
    out = lm.config.normalize(torch.tensor([[[[1.0, 0.0]]]]))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, -1.0]]]]))
    with pytest.raises(SpecError) as e:
        cl.load_model(FIX / "seq_mnist.h5", std=0)
    assert e.value.param == "std"
    with pytest.raises(SpecError) as e:
        cl.load_model(FIX / "seq_mnist.h5", mean=[0.1, 0.2])
    assert e.value.param == "mean"
    with pytest.raises(SpecError) as e:
        cl.load_model(FIX / "seq_mnist.h5", scale=-1.0)
    assert e.value.param == "scale"


def test_class_names_from_a_file_or_beside_the_model(tmp_path):
    names = [f"digit {i}" for i in range(10)]
    txt = tmp_path / "names.txt"
    txt.write_text("\n".join(names) + "\n")
    assert cl.load_model(FIX / "seq_mnist.h5", classes=txt).class_names == names
    js = tmp_path / "names.json"
    js.write_text(json.dumps({n: i for i, n in enumerate(names)}))  # Keras' class_indices
    assert read_class_names(js, 10) == names
    # a side classes.json next to a copy of the model
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.h5").write_bytes((FIX / "seq_mnist.h5").read_bytes())
    (tmp_path / "m" / "classes.json").write_text(json.dumps(names))
    assert cl.load_model(tmp_path / "m" / "model.h5").class_names == names
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(SpecError, match="3 class names for a model with 10 outputs") as e:
        cl.load_model(FIX / "seq_mnist.h5", classes=bad)
    assert e.value.param == "classes"
    with pytest.raises(SpecError, match="no such file"):
        cl.load_model(FIX / "seq_mnist.h5", classes=tmp_path / "absent.txt")


def test_live_keras_model_and_frozen_counts():
    import keras

    inp = keras.Input((16, 16, 3))
    t = keras.layers.Conv2D(4, 3, name="c1")(inp)
    t = keras.layers.GlobalAveragePooling2D()(t)
    out = keras.layers.Dense(2, activation="sigmoid")(t)
    m = keras.Model(inp, [out])
    m.get_layer("c1").trainable = False
    lm = cl.load_model(m)
    assert lm.num_classes == 2 and lm.layers().non_trainable_params == 4 * 27 + 4
    assert lm.source["output_activation"] == "sigmoid"


def test_one_unit_sigmoid_becomes_two_scores():
    import keras

    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                          keras.layers.Dense(1, activation="sigmoid")])
    lm = cl.load_model(m)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        p = m(x.permute(0, 2, 3, 1))[:, 0]
    probs = lm.probabilities(x)
    assert probs.shape == (3, 2)
    torch.testing.assert_close(probs[:, 1], p, atol=1e-6, rtol=0)


@pytest.mark.parametrize("path, message", [
    ("custom_layer.keras", "custom layer"),
    ("weights_only.h5", "holds only weights"),
    ("saved_model", "SavedModel folder"),
])
def test_bad_keras_files_are_one_clear_line(path, message):
    with pytest.raises(ModelError, match=message) as e:
        cl.load_model(FIX / path)
    assert "\n" not in str(e.value) and str(FIX / path) in str(e.value)


def test_unknown_and_garbage_files(tmp_path):
    junk = tmp_path / "model.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ModelError, match="not an HDF5 file"):
        cl.load_model(junk)
    junk_k = tmp_path / "model.keras"
    junk_k.write_bytes(b"PK?? broken")
    with pytest.raises(ModelError, match="not a Keras 3 .keras archive"):
        cl.load_model(junk_k)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x00\x01")
    with pytest.raises(ModelError, match="not a model file convlens reads"):
        cl.load_model(other)
    with pytest.raises(ModelError, match="no such Keras model file"):
        cl.load_model(tmp_path / "absent.keras")


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from convlens.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_predict_json_with_a_keras_model(capsys):
    code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / "seq_mnist.h5"), pngs("seq_mnist.h5")[0], "--json")
    assert code == 0, err
    out = json.loads(stdout)
    ref = np.load(FIX / "seq_mnist.png_probs.npy")[0]
    assert out[0]["predictions"][0]["index"] == int(ref.argmax())
    assert abs(out[0]["predictions"][0]["probability"] - float(ref.max())) < 1e-5


@pytest.mark.parametrize("path", ["custom_layer.keras", "weights_only.h5", "saved_model", "nope.h5"])
def test_cli_bad_keras_files_exit_2(capsys, path):
    code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / path), pngs("seq_mnist.h5")[0], "--json")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:"), err
    assert str(FIX / path) in lines[0]
    assert stdout == ""


def test_cli_unknown_file_exit_2(capsys, tmp_path):
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x00\x01")
    code, stdout, err = _cli(capsys, "predict", "--model", str(other), pngs("seq_mnist.h5")[0], "--json")
    assert code == 2 and stdout == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a model file convlens reads" in lines[0] and str(other) in lines[0]


def test_cli_model_options(capsys, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    img = pngs("seq_mnist.h5")[0]
    code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / "seq_mnist.h5"), img, "--classes", str(names),
                             "-k", "1", "--json")
    assert code == 0, err
    ref = np.load(FIX / "seq_mnist.png_probs.npy")[0]
    assert json.loads(stdout)[0]["predictions"][0]["label"] == f"digit {int(ref.argmax())}"
    # --scale as the course writes it (1/255 is the default for a model without Rescaling): same answer
    code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / "seq_mnist.h5"), img, "--scale", "1/255",
                             "--mean", "0", "--std", "1", "-k", "1", "--json")
    assert code == 0, err
    assert abs(json.loads(stdout)[0]["predictions"][0]["probability"] - float(ref.max())) < 1e-5
    # a different scale changes what the model sees
    code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / "seq_mnist.h5"), img, "--scale", "1/127.5",
                             "--mean", "1", "-k", "10", "--json")
    assert code == 0, err
    got = {p["index"]: p["probability"] for p in json.loads(stdout)[0]["predictions"]}
    assert max(abs(got[i] - float(ref[i])) for i in range(10)) > 1e-3
    for args, flag in [(["--mean", "0.1,0.2"], "--mean"), (["--std", "0"], "--std"), (["--scale", "1/0"], "--scale"),
                       (["--classes", str(tmp_path / "absent.txt")], "--classes")]:
        code, stdout, err = _cli(capsys, "predict", "--model", str(FIX / "seq_mnist.h5"), img, *args, "--json")
        assert code == 2 and stdout == "", args
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"convlens: error: {flag}"), (args, err)


@pytest.mark.parametrize("command", ["audit", "explain", "journey", "layers", "predict", "report", "sanity",
                                     "score", "visualize"])
def test_every_model_command_takes_the_model_options(capsys, command):
    import typer.main

    from convlens.cli import app

    cmd = typer.main.get_command(app).commands[command]
    flags = {o for p in cmd.params for o in p.opts}
    assert {"--model", "--classes", "--scale", "--mean", "--std"} <= flags, command


def test_cli_journey_on_the_nested_model(capsys, tmp_path):
    code, stdout, err = _cli(capsys, "journey", pngs("nested_transfer.h5")[0], "--model",
                             str(FIX / "nested_transfer.h5"), "--out", str(tmp_path / "j"), "--json")
    assert code == 0, err
    assert "base.block2_conv1" in stdout


def test_cli_audit_on_the_nested_model_with_class_names(capsys, tmp_path):
    names = ["left", "middle", "right"]
    (tmp_path / "names.json").write_text(json.dumps(names))
    data = tmp_path / "data"
    for c in names[:2]:
        (data / c).mkdir(parents=True)
        for i, p in enumerate(pngs("nested_transfer.h5")):
            (data / c / f"{i}.png").write_bytes(Path(p).read_bytes())
    code, stdout, err = _cli(capsys, "audit", str(data), "--model", str(FIX / "nested_transfer.h5"),
                             "--classes", str(tmp_path / "names.json"), "--out", str(tmp_path / "a"), "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["images"] == 4
    assert [c["class"] for c in d["classes"]] == ["left", "middle"]  # folders matched to the --classes names
    assert (tmp_path / "a" / "index.html").is_file()


def test_keras_imported_earlier_with_another_backend():
    """A Keras already in the process on another backend (here a stand-in module saying jax, as
    only the torch backend is installed) is one clear error, not a crash inside Keras."""
    code = ("import sys, types\n"
            "fake = types.ModuleType('keras'); fake.__version__ = '3.15.1'\n"
            "fake.backend = types.SimpleNamespace(backend=lambda: 'jax')\n"
            "sys.modules['keras'] = fake\n"
            "import convlens as cl\n"
            "from convlens.errors import ModelError\n"
            "try:\n    cl.load_model('tests/fixtures/keras/seq_mnist.h5')\n"
            "except ModelError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "ERR Keras was imported with the jax backend" in r.stdout, r.stdout + r.stderr
    assert "KERAS_BACKEND=torch" in r.stdout


def test_backend_already_imported_with_another_one():
    code = ("import os, sys, types; os.environ['KERAS_BACKEND'] = 'jax'\n"
            "from convlens.models.keras import import_keras\n"
            "from convlens.errors import ModelError\n"
            "try:\n    import_keras()\nexcept ModelError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "torch backend" in r.stdout and "KERAS_BACKEND" in r.stdout, r.stdout + r.stderr
