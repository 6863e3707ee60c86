"""The explorer's CAM layer menu (``/api/layers?spatial=true``) lists exactly the layers a map can
be computed on, with their grid: channels-first maps of a CNN, patch tokens of a ViT (14x14),
channels-last stages of Swin (7x7 ...); never a layer the explain verb refuses (attention
internals with windows folded into the batch, 1x1 pools, vectors). Models are random-init and
built offline (the ViT's weights saved as safetensors in ``tmp_path``, loaded by name)."""

from __future__ import annotations

import pytest
import timm
import torch

import convlens as cl
from convlens.errors import LayerError
from convlens.lens.cam.layers import check_layers
from convlens.web import create_app
from web_support import local_client

VIT = "timm:vit_small_patch16_224"
SWIN = "timm:swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def models(builtin_model, tmp_path_factory):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False)
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    torch.manual_seed(0)
    swin = cl.load_model(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False),
                         input_size=(3, 224, 224), name=SWIN)
    return {"builtin": builtin_model, VIT: cl.load_model(VIT, weights=str(path)), SWIN: swin}


@pytest.fixture(scope="module")
def client(models):
    app = create_app(models=list(models.values()))
    with local_client(app) as c:
        yield c


def _menu(client, model_id):
    r = client.get("/api/layers", params={"model": model_id, "spatial": True})
    assert r.status_code == 200, r.text
    return r.json()


def _accepted(lm, name) -> bool:
    try:
        check_layers(lm, [name])
    except LayerError:
        return False
    return True


@pytest.mark.parametrize("key", ["builtin", VIT, SWIN])
def test_the_menu_is_exactly_the_layers_explain_accepts(client, models, key):
    lm = models[key]
    body = _menu(client, lm.name)
    listed = {r["name"]: r for r in body["layers"]}
    table = lm.layers()
    for row in table.rows:  # listed <=> the verb takes it (no layer refused, none that works left out)
        assert (row.name in listed) == _accepted(lm, row.name), row.name
    for r in listed.values():
        assert r["cam"] and r["layout"] in ("nchw", "nhwc", "tokens")
        assert r["grid"] == r["output_shape"][1:] and r["grid"][0] * r["grid"][1] > 1
    assert body["default_cam_layer"] in listed
    every = client.get("/api/layers", params={"model": lm.name}).json()["layers"]
    assert [r["name"] for r in every] == table.names  # the full table is still there, marked
    assert {r["name"] for r in every if r["cam"]} == set(listed)
    assert len(listed) < len(every)  # something is left out of each (heads, pools, attention internals)


def test_vit_tokens_are_listed_on_the_patch_grid(client):
    body = _menu(client, VIT)
    rows = {r["name"]: r for r in body["layers"]}
    assert body["default_cam_layer"] == "blocks.11.norm1"
    assert rows["blocks.11.norm1"]["layout"] == "tokens" and rows["blocks.11.norm1"]["grid"] == [14, 14]
    assert rows["blocks.11.norm1"]["output_shape"] == [384, 14, 14]
    assert rows["patch_embed.proj"]["layout"] == "nchw" and rows["patch_embed.proj"]["grid"] == [14, 14]
    assert "head" not in rows and "head_drop" not in rows and "norm" in rows


def test_swin_stages_are_listed_channels_last_and_window_internals_are_not(client, models):
    body = _menu(client, SWIN)
    rows = {r["name"]: r for r in body["layers"]}
    assert body["default_cam_layer"] == "layers.3.blocks.1.norm1"
    assert rows["layers.3.blocks.1.norm1"]["layout"] == "nhwc" and rows["layers.3.blocks.1.norm1"]["grid"] == [7, 7]
    assert rows["layers.0"]["grid"] == [56, 56]
    table = models[SWIN].layers()
    # windows folded into the batch, (heads, 49, 49) attention maps: in the table, not in the menu
    folded = [r.name for r in table.rows if r.name.startswith("layers.0.blocks.0.attn")]
    assert "layers.0.blocks.0.attn.softmax" in folded and not any(n in rows for n in folded)
    assert table["layers.0.blocks.0.attn.softmax"].output_shape is not None  # a would-be (C, H, W)


def test_builtin_menu_leaves_out_the_1x1_pool(client, builtin_model):
    rows = {r["name"]: r for r in _menu(client, builtin_model.name)["layers"]}
    assert builtin_model.layers()["global_pool.pool"].output_shape == (1280, 1, 1)
    assert "global_pool.pool" not in rows and "classifier" not in rows
    assert rows["bn2"]["grid"] == [7, 7] and rows["bn2"]["layout"] == "nchw"


def test_the_explorer_explains_the_vit_at_a_menu_layer_and_refuses_one_it_does_not_list(client):
    r = client.post("/api/predict", data={"image": "sample:chelsea", "model": VIT},
                    files={"unused": ("x", b"", "text/plain")})  # multipart, as the page sends it
    assert r.status_code == 200, r.text
    for params in ({}, {"layer": "blocks.6.norm2"}, {"method": "rollout"}):
        r = client.get("/api/cam", params={"image": "sample:chelsea", "model": VIT, **params})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["size"] == [451, 300] and body["heatmap_png"].startswith("data:image/png")
        assert body["layer"] == params.get("layer", "attention" if "method" in params else "blocks.11.norm1")
    r = client.get("/api/cam", params={"image": "sample:chelsea", "model": SWIN,
                                       "layer": "layers.0.blocks.0.attn.softmax"})
    assert r.status_code == 400 and "cannot be read as a spatial grid" in r.json()["error"]
