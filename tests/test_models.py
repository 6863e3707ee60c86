"""Models: the built-in classifier, names, weights files, checkpoints, live modules, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from convlens.cli import main
from convlens.errors import ModelError, SpecError, TargetError
from convlens.models import LensModel, load_model, resolve_label, wrap_module

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
TIMM_SMALL = "mobilenetv3_small_050"  # a small timm model: cheap to build and run


def same_outputs(a, b):
    """Equal to float rounding. Seeded random weights give logits in the thousands, and the loaded
    model runs channels-last (other convolution kernels), so the tolerance is relative to the scale."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and buffer distinct random values, so equal outputs mean equal weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand(t.shape, generator=g) * 0.2 + (0.9 if t.dim() == 1 else -0.1))
    return module.eval()


@pytest.fixture(scope="module")
def probe_input() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


# -- the built-in model -----------------------------------------------------------
def test_builtin_predicts_cat_and_espresso_on_skimage_photos(builtin_model, sample_photos):
    lm = builtin_model
    assert lm.name == "effnet-lite0" and lm.num_classes == 1000
    assert lm.config.input_size == (3, 224, 224) and lm.config.mean == (0.5,) * 3 and lm.config.std == (0.5,) * 3
    preds = lm.predict([sample_photos["chelsea"], sample_photos["coffee"]], top_k=5)
    cat, coffee = preds
    assert cat.top.index in CATS, str(cat)
    assert coffee.top.index == ESPRESSO and coffee.top.probability > 0.5, str(coffee)
    assert "espresso" in coffee.top.label and not coffee.top.label.isdigit()
    assert "cat" in cat.top.label
    for p in preds:
        probs = [c.probability for c in p.predictions]
        assert probs == sorted(probs, reverse=True) and len(probs) == 5 and 0 < sum(probs) <= 1.0 + 1e-6
    assert cat.image == str(sample_photos["chelsea"])


def test_builtin_loads_with_the_network_blocked(builtin_model, monkeypatch):
    import socket

    def refuse(*_a, **_k):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = load_model()
    assert fresh is not builtin_model
    a, b = fresh.module.state_dict(), builtin_model.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # real weights, not a random init: the classifier's bias is the same trained vector
    assert fresh.module.classifier.bias.abs().mean() > 1e-3


def test_predict_batched_equals_one_by_one(builtin_model, sample_photos):
    names = ["chelsea", "coffee", "rocket"]
    paths = [sample_photos[n] for n in names]
    together = builtin_model.predict(paths, top_k=3, batch_size=2)  # two batches: 2 + 1
    for path, batched in zip(paths, together):
        alone = builtin_model.predict(path, top_k=3)[0]
        assert [c.index for c in alone.predictions] == [c.index for c in batched.predictions]
        for a, b in zip(alone.predictions, batched.predictions):
            assert abs(a.probability - b.probability) < 1e-5


def test_predict_rejects_bad_top_k(builtin_model, sample_photos):
    with pytest.raises(SpecError, match="top_k must be at least 1") as info:
        builtin_model.predict(sample_photos["chelsea"], top_k=0)
    assert info.value.param == "top_k" and "--top-k" not in str(info.value)


def test_cli_predict_json_shape_and_top_k(sample_photos, capsys):
    paths = [str(sample_photos["chelsea"]), str(sample_photos["coffee"])]
    assert main(["predict", *paths, "--json", "--top-k", "3"]) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)  # stdout holds JSON and nothing else
    assert isinstance(result, list) and [r["image"] for r in result] == paths
    for r in result:
        assert set(r) == {"image", "predictions"} and len(r["predictions"]) == 3
        for c in r["predictions"]:
            assert set(c) == {"index", "label", "probability"}
            assert isinstance(c["index"], int) and isinstance(c["label"], str) and isinstance(c["probability"], float)
        probs = [c["probability"] for c in r["predictions"]]
        assert probs == sorted(probs, reverse=True)
    assert result[0]["predictions"][0]["index"] in CATS
    assert result[1]["predictions"][0]["index"] == ESPRESSO
    assert result[1]["predictions"][0]["label"] == "espresso"

    assert main(["predict", paths[0], "--top-k", "0", "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "--top-k" in cap.err and len(cap.err.strip().splitlines()) == 1


@pytest.mark.data
def test_cli_predict_shared_photos(photos, capsys):
    paths = [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    assert main(["predict", *paths, "--json", "-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["image"] == paths[0] and result[0]["predictions"][0]["index"] in CATS
    assert result[1]["predictions"][0]["index"] == ESPRESSO
    for r in result:
        assert len(r["predictions"]) == 2
        for c in r["predictions"]:
            assert any(ch.isalpha() for ch in c["label"]) and not c["label"].startswith("class ")


def test_resolve_label():
    names = ["dog", "tabby, tabby cat", "tiger cat"]
    assert resolve_label("Tabby Cat", names) == 1 and resolve_label(2, names) == 2 and resolve_label("0", names) == 0
    with pytest.raises(TargetError, match="out of range"):
        resolve_label(3, names)
    with pytest.raises(TargetError, match="did you mean: tiger cat"):
        resolve_label("tiger cot", names)


# -- timm / torchvision names with local weights ------------------------------------------
def test_timm_with_local_state_dict_and_safetensors(tmp_path, probe_input, capsys):
    import timm
    from safetensors.torch import save_file

    src = _seeded(timm.create_model(TIMM_SMALL, pretrained=False))
    pt, st = tmp_path / "w.pt", tmp_path / "w.safetensors"
    torch.save(src.state_dict(), pt)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    with torch.no_grad():
        want = src(probe_input)
    for path in (pt, st):
        lm = load_model(f"timm:{TIMM_SMALL}", weights=str(path))
        assert lm.name == f"timm:{TIMM_SMALL}" and not lm.module.training
        with torch.no_grad():
            assert same_outputs(lm.module(probe_input), want)
    cfg = src.pretrained_cfg  # preprocessing comes from the model's timm config
    assert lm.config.input_size == tuple(cfg["input_size"]) and lm.config.mean == tuple(cfg["mean"])

    # the CLI takes the same --weights
    assert main(["layers", "--model", f"timm:{TIMM_SMALL}", "--weights", str(st), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "conv_stem"


def test_torchvision_with_local_weights(tmp_path, probe_input):
    from torchvision.models import resnet18

    src = _seeded(resnet18(weights=None), seed=3)
    pt = tmp_path / "r18.pth"
    torch.save(src.state_dict(), pt)
    lm = load_model("torchvision:resnet18", weights=str(pt))
    with torch.no_grad():
        assert same_outputs(lm.module(probe_input), src(probe_input))
    # preprocessing of the DEFAULT torchvision weights: 224 crop of a 256 resize, ImageNet mean/std
    assert lm.config.input_size == (3, 224, 224)
    assert lm.config.mean == pytest.approx((0.485, 0.456, 0.406)) and lm.config.crop_pct == pytest.approx(224 / 256)
    assert lm.config.interpolation == "bilinear"

    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelError, match="do not fit"):
        load_model("torchvision:resnet18", weights=str(wrong))
    with pytest.raises(ModelError, match="not found"):
        load_model("torchvision:resnet18", weights=str(tmp_path / "missing.pth"))


def test_torchvision_pretrained_from_the_torch_hub_cache(tmp_path, monkeypatch, probe_input):
    """The download path, offline: torchvision finds the DEFAULT weights file in TORCH_HOME."""
    from torchvision.models import ResNet18_Weights, resnet18

    src = _seeded(resnet18(weights=None), seed=5)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    filename = os.path.basename(ResNet18_Weights.DEFAULT.url)
    torch.save(src.state_dict(), checkpoints / filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lm = load_model("torchvision:resnet18")  # pretrained=True by default
    with torch.no_grad():
        assert same_outputs(lm.module(probe_input[:1]), src(probe_input[:1]))


def test_torchvision_pretrained_offline_without_cache_gives_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    def no_network(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelError, match="pass weights=PATH") as info:
        load_model("torchvision:resnet18")
    assert info.value.param == "weights"


_HF_SCRIPT = r"""
import json, sys, torch, timm
from convlens.models import load_model
lm = load_model("timm:{name}")  # pretrained=True: read from the HF cache, offline
x = torch.load(sys.argv[1], weights_only=True)
with torch.no_grad():
    print(json.dumps(lm.module(x).flatten().tolist()))
"""


def test_timm_pretrained_from_the_hf_cache_offline(tmp_path, probe_input):
    """The timm download path, offline: a Hugging Face cache holding model.safetensors."""
    import timm
    from safetensors.torch import save_file

    src = _seeded(timm.create_model(TIMM_SMALL, pretrained=False), seed=7)
    hub_id = src.pretrained_cfg["hf_hub_id"]  # e.g. timm/mobilenetv3_small_050.lamb_in1k
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(snap / "model.safetensors"))
    x = probe_input[:1]
    xfile = tmp_path / "x.pt"
    torch.save(x, xfile)
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", _HF_SCRIPT.replace("{name}", TIMM_SMALL), str(xfile)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    with torch.no_grad():
        want = src(x).flatten()
    assert same_outputs(got, want)


# -- checkpoints -----------------------------------------------------------------------
def test_save_and_load_checkpoint_predicts_the_same(sample_photos, tmp_path):
    import timm

    src = _seeded(timm.create_model(TIMM_SMALL, pretrained=False), seed=11)
    lm = load_model(src, class_names=[f"thing {i}" for i in range(1000)])
    lm.source = {"kind": "timm", "name": TIMM_SMALL}  # rebuildable from its name
    path = lm.save(tmp_path / "ckpt" / "small")
    assert path.name == "small.safetensors" and path.with_suffix(".json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["small.json", "small.safetensors"]  # no temporaries
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["source"]["kind"] == "timm" and meta["class_names"][5] == "thing 5"
    back = load_model(str(path))
    assert back.module is not src and back.config == lm.config and back.class_names == lm.class_names
    photos = [sample_photos["coffee"]]
    before, after = lm.predict(photos, top_k=3), back.predict(photos, top_k=3)
    for a, b in zip(before, after):
        assert [c.index for c in a.predictions] == [c.index for c in b.predictions]
        assert [c.label for c in b.predictions][0].startswith("thing ")
        assert all(abs(x.probability - y.probability) < 1e-5 for x, y in zip(a.predictions, b.predictions))

    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="lonely.json"):
        load_model(str(lonely))


class _Marker:
    """A pickle payload that would create a file if unpickled by full pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_module_and_code_are_refused(tmp_path, capsys):
    from torchvision.models import resnet18

    marker = tmp_path / "code_ran.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1000, 512), "payload": _Marker(str(marker))}, evil)
    whole = tmp_path / "whole_module.pth"
    torch.save(resnet18(weights=None), whole)  # a full pickled module, not a state dict

    for path in (evil, whole):
        with pytest.raises(ModelError, match="cannot read weights") as info:
            load_model("torchvision:resnet18", weights=str(path))
        assert path.name in str(info.value)
    assert not marker.exists()  # the unpickler never called open()

    assert main(["predict", "x.png", "--model", "torchvision:resnet18", "--weights", str(evil), "--json"]) in (2,)
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("name,words", [
    ("timm:resnet181", "did you mean: resnet18"),
    ("timm:nope", "unknown timm model"),
    ("torchvision:resnet19", "did you mean: resnet18"),
    ("torchvision:nope", "unknown torchvision"),
    ("foo", "unknown model 'foo'"),
    ("missing.safetensors", "no such checkpoint"),
])
def test_unknown_model_names(name, words, capsys):
    with pytest.raises(ModelError, match=words):
        load_model(name)
    assert main(["layers", "--model", name, "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and "error" in cap.err


def test_bad_weights_files(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 not safetensors at all")
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path, words in [(corrupt, "cannot read weights"), (tensor_only, "not a state dict"),
                        (empty, "cannot read weights")]:
        with pytest.raises(ModelError, match=words) as info:
            load_model(f"timm:{TIMM_SMALL}", weights=str(path), pretrained=False)
        assert path.name in str(info.value) and "\n" not in str(info.value)
    meta = tmp_path / "ck.json"
    (tmp_path / "ck.safetensors").write_bytes(b"x")
    meta.write_text("{not json")
    with pytest.raises(ModelError, match="not a convlens checkpoint"):
        load_model(str(tmp_path / "ck.safetensors"))


def test_directory_without_config_is_not_a_run(tmp_path):
    with pytest.raises(ModelError, match="not a convlens run"):
        load_model(str(tmp_path))


# -- live modules ---------------------------------------------------------------------
def test_live_module_wraps_with_given_preprocessing(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    lm = load_model(net, input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,))
    assert isinstance(lm, LensModel) and next(lm.module.parameters()) is next(net.parameters())  # shared weights
    assert lm.config.input_size == (1, 28, 28) and lm.config.mean == (0.1307,) and lm.config.image_mode == "L"
    assert lm.num_classes == 10 and lm.class_names[3] == "class 3"
    img = Image.new("RGB", (56, 40), (255, 255, 255))
    x = lm.preprocess(img)
    assert x.shape == (1, 1, 28, 28)
    assert torch.allclose(x, torch.full_like(x, (1 - 0.1307) / 0.3081), atol=1e-3)  # white, normalised
    assert len(lm.predict(img, top_k=20)[0].predictions) == 10  # top-k capped at the classes
    assert load_model(lm) is lm

    rgb = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    named = wrap_module(rgb, input_size=(32, 48), class_names=["a", "b"])  # (H, W): channels default to 3
    assert named.config.input_size == (3, 32, 48) and named.class_names == ["a", "b"]
    assert named.config.crop_pct == 1.0 and named.preprocess(img).shape == (1, 3, 32, 48)
    with pytest.raises(ModelError, match="int"):
        load_model(42)


def test_device_cuda_unavailable_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_model(nn.Linear(2, 2), device="cuda")


def test_channels_last_layout(probe_input):
    """channels_last=True: convlens works on a copy with channels-last conv weights (same outputs), the
    user's module untouched; by default its layout is left as found; the scoped form restores."""
    from torchvision.models import resnet18

    from convlens.models import channels_last, is_channels_last

    src = _seeded(resnet18(weights=None), seed=7).eval()
    with torch.no_grad():
        want = src(probe_input)
    lm = wrap_module(src, input_size=(3, 64, 64), channels_last=True)
    assert is_channels_last(lm.module) and not is_channels_last(src)
    assert lm.module.conv1.weight.stride()[1] == 1  # NHWC: channels are the innermost dimension
    with torch.no_grad():
        assert same_outputs(lm.module(probe_input), want)

    plain = _seeded(resnet18(weights=None), seed=7).eval()
    wrap_module(plain, input_size=(3, 64, 64))
    assert not is_channels_last(plain) and plain.conv1.weight.is_contiguous()
    with pytest.raises(RuntimeError, match="boom"):
        with channels_last(plain):
            assert is_channels_last(plain)
            raise RuntimeError("boom")
    assert not is_channels_last(plain) and plain.conv1.weight.is_contiguous()
    # no convolutions: nothing to convert
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    assert not is_channels_last(wrap_module(mlp, input_size=(3, 2, 2)).module)


# -- bounds of a spec network, checked from the tokens before any module exists ----------------------------
@pytest.mark.parametrize("spec, size, classes, words", [
    ("conv999999999-gap", (1, 28, 28), 10, "too large (at most 4096)"),
    ("conv8k99999-gap", (1, 28, 28), 10, "too large (at most 4096)"),
    ("-".join(["conv4"] * 257) + "-gap", (1, 28, 28), 10, "at most 256"),
    ("conv4096-conv4096-conv4096-gap", (1, 28, 28), 10, "parameters"),
    ("conv8-fc4096-fc4096-fc4096-fc4096-fc4096", (1, 512, 512), 10, "parameters"),
    ("conv1024-gap", (3, 4096, 4096), 10, "values per image"),
    ("conv8-gap", (3, 30000, 30000), 10, "input_size"),
    ("conv8-gap", (3, 28, 28), 10**6, "num_classes"),
    ("conv8-gap", (3, 28.0, 28), 10, "input_size"),
])
def test_spec_bounds_refused_before_building(monkeypatch, spec, size, classes, words):
    from convlens.models import arch

    def no_layers(*_a, **_k):
        raise AssertionError("a layer was built before the refusal")

    monkeypatch.setattr(arch.nn, "Conv2d", no_layers)
    monkeypatch.setattr(arch.nn, "Linear", no_layers)
    with pytest.raises(SpecError) as info:
        arch.build_arch(spec, size, classes, pretrained=False)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_spec_check_counts_what_the_network_holds():
    from convlens.models.arch import build_arch, check_spec

    for spec, size in (("conv16-bn-pool-conv32-bn-pool-fc64-drop0.2", (1, 28, 28)), ("conv8v-pool-gap", (3, 20, 24)),
                       ("fc32", (1, 8, 8))):
        net = build_arch(spec, size, 5, pretrained=False)
        counted, _ = check_spec(spec, size, 5)
        real = sum(p.numel() for p in net.parameters())
        assert real <= counted <= real + 4 * 64 + 20  # batch norm statistics counted as parameters
