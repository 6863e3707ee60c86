"""The course's learner (issue 30): start-up, conventions, and no silent surprises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


# -- start-up: the built-in model without timm ---------------------------------------------------
def test_builtin_lite0_is_timms_model_module_for_module():
    timm = pytest.importorskip("timm")
    from convlens.models.lite0 import efficientnet_lite0

    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours = efficientnet_lite0().eval()
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == \
        [(n, type(m).__name__) for n, m in ref.named_modules()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    torch.manual_seed(0)
    state = {k: (torch.rand_like(v) + 0.5 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    ours.load_state_dict(state)
    for size in (224, 97, 130):  # odd sizes exercise the TensorFlow 'SAME' padding
        x = torch.randn(2, 3, size, size + 3)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                       ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=1e-4, atol=1e-4)
    ours.reset_classifier(7)
    assert ours(torch.randn(1, 3, 64, 64)).shape == (1, 7) and ours.get_classifier().out_features == 7


def test_preprocess_without_timm_is_timms_transform_bit_for_bit():
    pytest.importorskip("timm")
    from timm.data import create_transform

    from convlens.models import Preprocess

    rng = np.random.default_rng(0)
    for input_size, crop_pct, interp, mode in [((3, 224, 224), 0.875, "bicubic", "RGB"),
                                               ((3, 96, 96), 1.0, "bilinear", "RGB"),
                                               ((1, 28, 28), 1.0, "bilinear", "L")]:
        pre = Preprocess(input_size=input_size, mean=(0.5,) * input_size[0], std=(0.25,) * input_size[0],
                         interpolation=interp, crop_pct=crop_pct)
        ref = create_transform(input_size=input_size, is_training=False, interpolation=interp, mean=pre.mean,
                               std=pre.std, crop_pct=crop_pct, crop_mode="center")
        assert type(pre.transform).__name__ == "PilTransform"
        for w, h in [(300, 200), (200, 301), (256, 256), (input_size[2], input_size[1]), (20, 50)]:
            pic = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
            assert torch.equal(pre.transform(pic), ref(pic)), (input_size, w, h)


def test_imagenet_labels_match_timms():
    timm_data = pytest.importorskip("timm.data")
    from convlens.models.labels import imagenet_labels

    info = timm_data.ImageNetInfo()
    assert imagenet_labels() == tuple(info.index_to_description(i) for i in range(1000))


def test_predict_of_the_builtin_imports_no_timm_torchvision_matplotlib(tmp_path):
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(tmp_path / "one.png")
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('HEAVY', sorted(m for m in ('timm', 'torchvision', 'matplotlib', "
            "'captum', 'lightning', 'pandas') if m in sys.modules)))\n"
            "from convlens.cli import main\n"
            f"sys.argv = ['convlens', 'predict', {str(tmp_path / 'one.png')!r}, '--json']\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


# -- augmentation as the lecture writes it -------------------------------------------------------
def test_rotate_as_a_fraction_of_a_turn_and_a_warning_below_one_degree():
    import warnings

    from convlens.data.augment import AugmentWarning, parse_augment

    assert parse_augment("rotate=0.2turn").rotate == pytest.approx(72.0)
    assert parse_augment("rotate=15deg").rotate == 15.0
    with pytest.warns(AugmentWarning, match=r"rotate=0.2 is 0.2 degrees.*rotate=0.2turn \(72 degrees\)"):
        parse_augment("rotate=0.2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_augment("rotate=0.2turn,zoom=0.1")  # no warning
        parse_augment("rotate=0")
    from convlens.errors import SpecError

    with pytest.raises(SpecError, match="between 0 and 180"):
        parse_augment("rotate=0.6turn")


def test_augment_preview_grid_5x5_labels_each_copy(tmp_path, capsys):
    import json

    from convlens.cli import main
    from convlens.data.augment import parse_augment

    src = tmp_path / "face.png"
    Image.fromarray(np.tile(np.arange(32, dtype=np.uint8)[None] * 8, (30, 1))).save(src)
    aug = parse_augment("rotate=0.1turn,translate=0.1,flip=h")
    n = 25
    params = aug.sample(n, torch.Generator().manual_seed(0))
    from convlens.data import augment as mod

    labels = [mod._describe(params, i, 32, 30) for i in range(1, n)]
    assert all("°" in t and "px" in t for t in labels) and len(set(labels)) == n - 1
    labelled, bare = aug.preview(src, grid=(5, 5)), aug.preview(src, grid=(5, 5), labels=False)
    assert labelled.height > bare.height  # a line of text above each row of copies
    # the same seed, the same copies as a training batch gets
    x = torch.from_numpy(np.array(Image.open(src))).view(1, 1, 30, 32).repeat(n, 1, 1, 1)
    assert torch.equal(aug(x, generator=torch.Generator().manual_seed(0)), aug(x, params=params))

    assert main(["augment-preview", str(src), "--augment", "rotate=0.5", "--grid", "5x5", "--out",
                 str(tmp_path / "p"), "--json"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["grid"] == [5, 5] and "0.5turn" in doc["warnings"][0] and "warning: augment: rotate=0.5" in cap.err
    assert main(["augment-preview", str(src), "--augment", "rotate=5", "--grid", "5y5",
                 "--out", str(tmp_path / "q")]) == 2
    assert "--grid '5y5': ROWSxCOLUMNS" in capsys.readouterr().err


# -- offline fast and honest; random weights said so ---------------------------------------------
def test_pretrained_name_offline_fails_at_once_with_the_whole_message(monkeypatch):
    pytest.importorskip("timm")
    from convlens.errors import ModelError
    from convlens.models.arch import timm_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        timm_module("resnet10t")  # not in the local cache: the hub is not asked at all
    msg = str(info.value)
    assert "no network (HF_HUB_OFFLINE is set) and not in the local cache" in msg
    assert "pretrained=False for random weights" in msg and msg.endswith(")") and "\n" not in msg


def test_predict_with_random_weights_says_so(tmp_path, capsys):
    import json

    pytest.importorskip("timm")
    from convlens.cli import main

    img = tmp_path / "one.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(img)
    assert main(["predict", str(img), "--model", "timm:test_resnet", "--no-pretrained", "--json", "-k", "2"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert rows[0]["weights"] == "random" and "timm:test_resnet has random weights" in cap.err
    assert main(["predict", str(img), "--model", "timm:test_resnet", "--no-pretrained", "-k", "1"]) == 0
    assert "(random weights)" in capsys.readouterr().out


@pytest.mark.slow  # 138 M parameters built and run once at 224x224: ~10-30 s on 2 busy cores
def test_layers_of_vgg16_with_random_weights_offline(monkeypatch, capsys):
    pytest.importorskip("timm")
    from convlens.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["layers", "--model", "timm:vgg16", "--no-pretrained", "--leaves"]) == 0
    assert "Total params: 138,357,544" in capsys.readouterr().out


# -- compare in an 80-column terminal -------------------------------------------------------------
def test_compare_table_fits_80_columns_without_cutting_a_value():
    from rich.console import Console

    from convlens.cli.cmd_compare import compare_table

    rows = [{"run": f"runs/fashion-conv-{i}", "arch": "conv64v-pool-conv64v-pool-fc128", "input_size": "28x28x1",
             "params": 243786, "trainable": 243786, "accuracy": 0.91234, "balanced_accuracy": 0.9087,
             "macro_f1": 0.90765, "epochs": 5, "seconds": 61.7} for i in range(3)]
    for width in (80, 200):
        con = Console(width=width, record=True, color_system=None)
        con.print(compare_table(rows, "compare (fashion-mnist)", con.width))
        text = con.export_text()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
        for value in ("243,786", "0.9123", "0.9087", "0.9076", "61.7s", "28x28x1"):
            assert value in text
        assert "fashion-conv-2" in text.replace("\n", "").replace("│", "").replace(" ", "")


# -- the lectures' conventions ------------------------------------------------------------------
FASHION_CNN = "conv64v-pool-conv64v-pool-fc128"  # Conv2D(64, 3, valid), MaxPool 2, ..., Dense 128, Dense 10


def test_the_lectures_fashion_cnn_has_kerases_shapes_and_243786_parameters(capsys):

    from convlens.models import build_arch, build_layer_table

    net = build_arch(FASHION_CNN, (1, 28, 28), 10).eval()
    assert sum(p.numel() for p in net.parameters()) == 243_786
    table = build_layer_table(net, torch.zeros(1, 1, 28, 28))
    rows = table.keras_rows()
    assert [(r["name"], r["type"], tuple(r["output_shape"]), r["params"]) for r in rows] == [
        ("conv2d", "Conv2D", (26, 26, 64), 640), ("max_pooling2d", "MaxPooling2D", (13, 13, 64), 0),
        ("conv2d_1", "Conv2D", (11, 11, 64), 36_928), ("max_pooling2d_1", "MaxPooling2D", (5, 5, 64), 0),
        ("flatten", "Flatten", (1600,), 0), ("dense", "Dense", (128,), 204_928), ("dense_1", "Dense", (10,), 1_290)]
    assert table.total_params == 243_786


def test_layers_keras_option_prints_hwc_shapes_and_keras_names(capsys):
    import json

    from convlens.cli import main

    assert main(["layers", "--keras"]) == 0  # the built-in model
    text = capsys.readouterr().out
    assert "conv2d (Conv2D)" in text and "(None, 112, 112, 32)" in text and "Total params: 4,652,008" in text
    assert main(["layers", "--keras", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"name": "conv2d", "type": "Conv2D", "output_shape": [112, 112, 32], "params": 864,
                       "layer": "conv_stem"}
    assert rows[-1]["type"] == "Dense" and rows[-1]["output_shape"] == [1000]


# -- one size convention: width x height ------------------------------------------------------
def test_size_is_width_x_height_and_a_transposing_size_warns():
    import warnings

    from convlens.data import parse_size, resize_set
    from convlens.data.sources import ImageSet, SizeWarning

    assert parse_size("32x30") == (30, 32)  # as --scale 4 and the summaries say: 32 wide, 30 tall
    faces = ImageSet(torch.zeros(4, 1, 60, 64, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"],
                     [f"f{i}" for i in range(4)], {"kind": "arrays"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resize_set(faces, "32x30").images.shape[-2:] == (30, 32)
    with pytest.warns(SizeWarning, match="size 30x32 .* turns 64x60 images portrait.*write 32x30"):
        resize_set(faces, "30x32")


# -- Fashion-MNIST as the lecture uses it --------------------------------------------------------
def test_fashion_mnist_offline_says_what_to_put_where_and_reads_torchvisions_layout(tmp_path, monkeypatch):
    import gzip
    import struct

    from convlens.data import load_source
    from convlens.errors import DataError

    monkeypatch.setenv("CONVLENS_OFFLINE", "1")
    with pytest.raises(DataError) as info:
        load_source(f"fashion-mnist:{tmp_path / 'fashion'}")
    msg = str(info.value)
    assert "no network to download them" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert f"into {tmp_path / 'fashion'}" in msg and "fashion-mnist.s3-website" in msg
    raw = tmp_path / "fashion" / "FashionMNIST" / "raw"  # where torchvision's FashionMNIST(download=True) puts them
    raw.mkdir(parents=True)
    for prefix, n in (("train", 12), ("t10k", 6)):
        x = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + x.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())
    ds = load_source(f"fashion-mnist:{tmp_path / 'fashion'}")
    assert len(ds) == 18 and ds.class_names[0] == "T-shirt/top"


def test_show_data_and_journey_pick_images_by_index(tmp_path, capsys):
    import json

    from convlens.cli import main
    from convlens.data.sources import split_index

    assert split_index("digits@23") == ("digits", [23])
    assert split_index("fashion-mnist:/d/f@0-2,9") == ("fashion-mnist:/d/f", [0, 1, 2, 9])
    assert split_index("photos/a@2.png") == ("photos/a@2.png", None)  # a file, not a data source
    assert main(["show-data", "digits@3,5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sum(doc["counts"].values()) == 2
    assert main(["show-data", "digits@1797"]) == 2
    assert "index 1797 is past the last image (1796; 1797 images)" in capsys.readouterr().err
    assert main(["journey", "digits@5", "--layers", "conv_stem", "--out", str(tmp_path / "j"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["layers"][0]["layer"] == "conv_stem" and (tmp_path / "j").is_dir()


# -- the explorer's Runs view at 20 and 100 classes (Chromium, 1400 px) ------------------------
FILL_CONFUSION = """(n) => {
  const t = document.getElementById("run-confusion");
  t.replaceChildren();
  const head = document.createElement("tr");
  const corner = document.createElement("th"); corner.className = "corner"; corner.textContent = "true / predicted";
  head.append(corner);
  for (let j = 0; j < n; j++) {
    const th = document.createElement("th"); th.textContent = "class " + j; head.append(th);
  }
  const thead = document.createElement("thead"); thead.append(head); t.append(thead);
  const body = document.createElement("tbody");
  for (let i = 0; i < n; i++) {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.textContent = "class " + i; tr.append(th);
    for (let j = 0; j < n; j++) {
      const td = document.createElement("td"); td.textContent = i === j ? 97 : (i + j) % 7; tr.append(td);
    }
    body.append(tr);
  }
  t.append(body);
  const card = document.getElementById("run").closest(".card") || document.getElementById("run");
  const r = card.getBoundingClientRect();
  return {page: document.documentElement.scrollWidth, right: r.right, box: t.parentElement.clientWidth,
          boxScroll: t.parentElement.scrollWidth};
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_explorer_runs_view_fits_its_card_at_20_and_100_classes(builtin_model):
    import shutil
    import threading
    import time

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium")
    import socket

    import uvicorn

    from convlens.web import create_app
    from web_support import runs_root

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(models=[builtin_model], runs_dir=runs_root()), host="127.0.0.1",
                                        port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#tab-runs").click()
            page.wait_for_selector(".run-card.active")
            page.wait_for_selector("#run-confusion tbody tr")
            for _ in range(1200):  # the curves picture loaded (polled: the page's CSP forbids eval)
                if page.evaluate("() => { const i = document.getElementById('run-curves');"
                                 " return i.complete && i.naturalWidth > 0; }"):
                    break
                time.sleep(0.1)
            for n in (20, 100):
                got = page.evaluate(FILL_CONFUSION, n)
                page.screenshot(path=str(artifacts / f"explorer-runs-{n}.png"), full_page=True)
                assert got["page"] <= 1400, got  # the page does not grow sideways
                assert got["right"] <= 1400, got  # the card stays in the window
                if n == 100:
                    assert got["boxScroll"] > got["box"]  # the matrix scrolls inside its card
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(10)


# -- notebooks a learner can open ------------------------------------------------------------------
def test_make_lab_starts_jupyter_on_the_venv():
    text = (ROOT / "Makefile").read_text()
    recipe = text[text.index("\nlab:"):].split("\n\n")[0]
    assert "pip install -q -e '.[lab]'" in recipe and "$(BIN)/python -m jupyter lab" in recipe
    assert "jupyterlab" in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("name", ["02_dense_vs_conv", "04_cmu_faces_augmentation"])
@pytest.mark.parametrize("where", ["repo", "repo/docs/notebooks", "repo/docs"])
def test_notebooks_find_shared_data_without_environment_variables(tmp_path, monkeypatch, name, where):
    import json

    nb = json.loads((ROOT / "docs" / "notebooks" / f"{name}.ipynb").read_text())
    cell = next("".join(c["source"]) for c in nb["cells"] if "DATA =" in "".join(c["source"]))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    cwd = tmp_path / where
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("CONVLENS_DATA", raising=False)
    scope: dict = {}
    exec(compile(cell, name, "exec"), scope)
    assert scope["DATA"].resolve() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.setenv("CONVLENS_DATA", str(tmp_path / "elsewhere"))
    exec(compile(cell, name, "exec"), scope)
    assert scope["DATA"] == tmp_path / "elsewhere"


def test_no_pretrained_on_the_builtin_model_is_refused_not_ignored(capsys):
    from convlens.cli import main

    assert main(["layers", "--no-pretrained"]) == 2
    assert "the built-in model always has its ImageNet weights" in capsys.readouterr().err
