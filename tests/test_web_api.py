"""The web explorer's JSON API, through FastAPI's TestClient: every endpoint and every bad input."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading

import numpy as np
import pytest
from PIL import Image

from convlens.web import create_app
from convlens.web.state import Busy, WorkQueue
from web_support import local_client

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs_dir():
    from web_support import runs_root

    return runs_root()


@pytest.fixture(scope="module")
def client(builtin_model, runs_dir):
    app = create_app(models=[builtin_model], runs_dir=runs_dir, max_upload=2 * 1024 * 1024)
    with local_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def cat_png(sample_photos) -> bytes:
    return sample_photos["chelsea"].read_bytes()


# ------------------------------------------------------------------ page, info, docs


def test_page_is_served_with_a_strict_csp_and_no_inline_script(client):
    r = client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = r.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers break the CSP"
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assert 'href="/render-static/style.css"' in html  # the stylesheet the reports inline
    for path in ("/static/app.js", "/static/app.css", "/favicon.ico", "/render-static/style.css"):
        assert client.get(path).status_code == 200, path


def test_info_lists_models_samples_and_capabilities(client, builtin_model):
    info = client.get("/api/info").json()
    assert info["default_model"] == builtin_model.name
    assert any(m.startswith("run:") for m in info["models"])
    assert {s["id"] for s in info["samples"]} >= {"sample:chelsea", "sample:coffee"}
    assert info["capabilities"] == {"runs": True}  # every view is always there; runs when served
    assert "vertical-edge" in info["kernels"]
    assert info["max_upload_bytes"] == 2 * 1024 * 1024


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/predict", "/api/images", "/api/layers", "/api/journey", "/api/kernels", "/api/runs"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")  # FastAPI's Swagger page: the only one with a looser policy
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "cdn.jsdelivr.net" not in client.get("/").headers["content-security-policy"]


def test_openapi_declares_the_form_fields_and_bodies_with_their_bounds(client):
    """The upload routes' fields are FastAPI ``File``/``Form`` parameters and the kernels lab a body
    model: the schema shows each field with its bounds (what the fuzzer generates values from)."""
    spec = client.get("/openapi.json").json()

    def schema_of(path):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        ref = next(iter(content.values()))["schema"]["$ref"].rsplit("/", 1)[-1]
        return spec["components"]["schemas"][ref]["properties"]

    predict = schema_of("/api/predict")
    assert predict["top_k"]["minimum"] == 1 and predict["top_k"]["maximum"] == 1000
    assert {"file", "image", "model"} <= set(predict)
    assert "file" in schema_of("/api/images")
    lab = schema_of("/api/kernels")
    assert lab["repeat"]["maximum"] == 16 and lab["stride"]["maximum"] == 64 and lab["size"]["maximum"] == 512
    assert "pattern" in lab["padding"]
    cam = {p["name"]: p["schema"] for p in spec["paths"]["/api/cam"]["get"]["parameters"]}
    assert cam["image"]["maxLength"] == 200  # free text is bounded too


def test_layers_endpoint_matches_the_layer_table(client, builtin_model):
    body = client.get("/api/layers").json()
    assert [r["name"] for r in body["layers"]] == builtin_model.layers().names
    assert body["stages"] == builtin_model.stage_layers()
    spatial = client.get("/api/layers", params={"spatial": True}).json()["layers"]
    assert spatial and all(len(r["output_shape"]) == 3 for r in spatial)
    r = client.get("/api/layers", params={"model": "effnet-lite1"})
    assert r.status_code == 404 and "effnet-lite0" in r.json()["error"]


# ------------------------------------------------------------------ images


def test_samples_and_images_by_id(client):
    assert client.get("/api/samples").json()[0]["id"].startswith("sample:")
    r = client.get("/api/images/sample:chelsea", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(r.content)).size) == 64


@pytest.mark.parametrize("bad, status", [
    ("sample:dog", {404}),              # not a sample
    ("upload:0123456789abcdef", {404}),  # well-formed but unknown
    ("../../etc/passwd", {404}),         # a path is never an id
    ("..%2F..%2Fetc%2Fpasswd", {404, 422}),
    ("/etc/passwd", {404}),
    ("etc", {422}),
    ("upload:../../etc/passwd", {404, 422}),
])
def test_image_ids_are_checked_never_paths(client, bad, status):
    r = client.get(f"/api/images/{bad}")
    assert r.status_code in status
    assert "error" in r.json()
    assert "root:" not in r.text


def test_upload_then_use_by_id(client, cat_png):
    r = client.post("/api/images", files={"file": ("my cat.png", cat_png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert re.fullmatch(r"upload:[0-9a-f]{16}", body["id"]) and body["name"] == "my cat.png"
    assert (body["width"], body["height"]) == (451, 300)
    assert client.get(f"/api/images/{body['id']}").status_code == 200


def test_upload_keeps_only_the_base_name(client, cat_png):
    r = client.post("/api/images", files={"file": ("../../secret/cat.png", cat_png, "image/png")})
    assert r.status_code == 200 and r.json()["name"] == "cat.png"


def test_large_uploads_are_shrunk(client):
    ramp = np.linspace(0, 255, 2000, dtype=np.float32)
    big = Image.fromarray(np.broadcast_to(ramp, (1500, 2000)).astype(np.uint8))  # compresses well
    body = client.post("/api/images", files={"file": ("big.png", png_bytes(big), "image/png")}).json()
    assert max(body["width"], body["height"]) == 1024


# ------------------------------------------------------------------ predict


def test_predict_upload_answers_like_the_cli(client, builtin_model, sample_photos, cat_png):
    r = client.post("/api/predict", files={"file": ("chelsea.png", cat_png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = builtin_model.predict([sample_photos["chelsea"]], top_k=5)[0].to_dict()
    assert set(body) == {"image", "predictions"} and body["image"] == "chelsea.png"
    assert [p["index"] for p in body["predictions"]] == [p["index"] for p in expected["predictions"]]
    for got, want in zip(body["predictions"], expected["predictions"]):
        assert set(got) == {"index", "label", "probability"}
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-4)
    assert body["predictions"][0]["index"] in CAT_CLASSES  # it is a cat
    assert r.headers["x-convlens-image"].startswith("upload:")


def test_predict_by_sample_id_with_top_k(client):
    r = client.post("/api/predict", data={"image": "sample:coffee", "top_k": "3"},
                    files={"unused": ("x", b"", "text/plain")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == "coffee.png" and len(body["predictions"]) == 3
    assert "espresso" in body["predictions"][0]["label"] or "cup" in body["predictions"][0]["label"]


def _truncated_png(cat_png: bytes) -> bytes:
    return cat_png[: len(cat_png) // 2]


def _bomb_png() -> bytes:
    return png_bytes(Image.new("1", (9000, 9000)))  # 81 Mpx in a few kB


@pytest.mark.parametrize("name, make, words", [
    ("notes.txt", lambda cat: b"this is not an image at all\n" * 10, "not an image"),
    ("empty.png", lambda cat: b"", "empty"),
    ("half.png", _truncated_png, "truncated"),
    ("bomb.png", lambda cat: _bomb_png(), "decompression bomb"),
])
@pytest.mark.parametrize("endpoint", ["/api/predict", "/api/images"])
def test_bad_images_get_a_clear_4xx(client, cat_png, endpoint, name, make, words):
    r = client.post(endpoint, files={"file": (name, make(cat_png), "application/octet-stream")})
    assert r.status_code == 422
    error = r.json()["error"]
    assert words in error and name in error
    assert "Traceback" not in r.text


def test_upload_over_the_limit_is_413(client):
    blob = b"\x89PNG" + b"\0" * (2 * 1024 * 1024 + 10)
    r = client.post("/api/predict", files={"file": ("huge.png", blob, "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_streamed_upload_over_the_limit_is_413(client):
    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(40):
            yield b"x" * (64 * 1024)

    r = client.post("/api/images", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413


@pytest.mark.parametrize("kwargs, status, words", [
    ({"json": {"image": "sample:chelsea"}}, 415, "multipart"),
    ({"data": {"top_k": "3"}, "files": {"other": ("a", b"b")}}, 422, "image"),
    ({"data": {"image": "sample:chelsea", "top_k": "many"}, "files": {"o": ("a", b"b")}}, 422, "top_k"),
    ({"data": {"image": "sample:chelsea", "top_k": "0"}, "files": {"o": ("a", b"b")}}, 422, "top_k"),
    ({"data": {"image": "sample:chelsea", "model": "timm:nope"}, "files": {"o": ("a", b"b")}}, 404, "timm:nope"),
    ({"data": {"image": "/etc/passwd"}, "files": {"o": ("a", b"b")}}, 422, "not an image id"),
])
def test_predict_bad_requests(client, kwargs, status, words):
    r = client.post("/api/predict", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


# ------------------------------------------------------------------ bounded work queue


def test_full_queue_answers_503_with_retry_after(builtin_model):
    app = create_app(models=[builtin_model], queue_size=0)
    with local_client(app) as c:
        r = c.post("/api/predict", data={"image": "sample:chelsea"}, files={"o": ("a", b"b")})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "busy" in r.json()["error"]


def test_gathered_batches_run_in_even_forwards_of_at_most_16():
    from convlens.web.routes_explain import even_chunks

    assert [even_chunks(n) for n in (1, 2, 10, 16, 17, 20, 32)] == [1, 2, 10, 16, 9, 10, 16]


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities: POSIX")
@pytest.mark.parametrize("nice", [None, 19])
def test_io_threads_keep_the_priority_of_the_model_worker_unless_told(nice):
    """By default the I/O threads run at the server's priority (a nice thread starves whenever any
    other process is busy); ``io_nice`` lowers them when asked."""
    async def main():
        q = WorkQueue(workers=1, capacity=4) if nice is None else WorkQueue(workers=1, capacity=4, io_nice=nice)

        def tid():
            return threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        (_, io_nice), (_, worker_nice) = await q.run_io(tid), await q.run(tid)
        q.shutdown()
        return io_nice, worker_nice

    io_nice, worker_nice = asyncio.run(main())
    assert worker_nice == os.getpriority(os.PRIO_PROCESS, 0)
    assert io_nice == (worker_nice if nice is None else min(19, worker_nice + nice))


def test_work_queue_admits_at_most_its_capacity():
    gate = threading.Event()

    async def main():
        q = WorkQueue(workers=1, capacity=2)
        a = asyncio.ensure_future(q.run(gate.wait, 10))
        b = asyncio.ensure_future(q.run(gate.wait, 10))
        await asyncio.sleep(0.05)
        assert q.pending == 2
        with pytest.raises(Busy):
            await q.run(lambda: 1)
        gate.set()
        await asyncio.gather(a, b)
        assert q.pending == 0 and await q.run(lambda: 7) == 7  # admits again once drained
        q.shutdown()

    asyncio.run(main())


# ------------------------------------------------------------------ journey


def test_journey_layers_tiles_and_channels(client, builtin_model):
    r = client.get("/api/journey", params={"image": "sample:chelsea"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["layers"] == builtin_model.stage_layers() and body["layer"] == body["layers"][0]
    assert body["shape"] == [32, 112, 112] and len(body["tiles"]) == 32
    assert all(t["png"].startswith("data:image/png;base64,") for t in body["tiles"])
    deep = client.get("/api/journey", params={"image": "sample:chelsea", "layer": "blocks.5",
                                              "max_channels": 16, "grid": True}).json()
    assert deep["index"] == body["layers"].index("blocks.5") and deep["shape"][0] == 192
    assert len(deep["tiles"]) == 16 and deep["n_channels"] == 192 and "grid_png" in deep
    ch = client.get("/api/journey/channel",
                    params={"image": "sample:chelsea", "layer": "blocks.5", "channel": 100}).json()
    assert ch["channel"] == 100 and ch["shape"] == deep["shape"][1:] and ch["max"] >= ch["min"]


@pytest.mark.parametrize("params, status, words", [
    ({"image": "sample:chelsea", "layer": "blocks.9"}, 400, "did you mean"),
    ({"image": "sample:nope"}, 404, "no such sample"),
    ({}, 422, "image"),
])
def test_journey_bad_requests(client, params, status, words):
    r = client.get("/api/journey", params=params)
    assert r.status_code == status and words in r.json()["error"]


def test_journey_channel_out_of_range(client):
    r = client.get("/api/journey/channel", params={"image": "sample:chelsea", "layer": "conv_stem", "channel": 32})
    assert r.status_code == 400 and "0-31" in r.json()["error"]


# ------------------------------------------------------------------ kernels lab


def test_kernels_lab_finds_a_vertical_edge(client):
    bar = np.zeros((64, 64), dtype=np.uint8)
    bar[:, 28:36] = 255
    image_id = client.post("/api/images",
                           files={"file": ("bar.png", png_bytes(Image.fromarray(bar)), "image/png")}).json()["id"]

    def energy(kernel):
        r = client.post("/api/kernels", json={"image": image_id, "kernel": kernel, "size": 64})
        assert r.status_code == 200, r.text
        return r.json()

    vertical, horizontal = energy("vertical-edge"), energy("horizontal-edge")
    assert vertical["stages"][0]["energy"] > 100 * (horizontal["stages"][0]["energy"] + 1e-6)
    assert vertical["shapes"] == [[64, 64], [62, 62]]
    assert vertical["stage_pngs"][0].startswith("data:image/png;base64,")


def test_kernels_lab_shapes_follow_the_settings(client):
    r = client.post("/api/kernels", json={"image": "sample:chelsea", "kernel": "1,0,-1;2,0,-2;1,0,-1",
                                          "stride": 2, "padding": "same", "repeat": 2, "pool": "max",
                                          "size": 100, "color": "rgb"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shapes"] == [[67, 100], [34, 50], [17, 25], [8, 12]]
    assert body["kernel"]["name"] == "custom" and body["channels"] == 3


@pytest.mark.parametrize("req, words", [
    ({"kernel": "1,2;3"}, "ragged"),
    ({"kernel": "sobel-z"}, "did you mean"),
    ({"stride": 0}, "stride"),
    ({"pool": "median"}, "pool"),
    ({"padding": "lots"}, "padding"),
    ({"image": "../x"}, "not an image id"),
])
def test_kernels_lab_bad_requests(client, req, words):
    r = client.post("/api/kernels", json={"image": "sample:chelsea", **req})
    assert r.status_code in (400, 422), r.text
    assert words in r.json()["error"]


def test_kernels_lab_rejects_a_bad_body(client):
    r = client.post("/api/kernels", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/api/kernels", json={"size": 100000})
    assert r.status_code == 422 and "size" in r.json()["error"]


# ------------------------------------------------------------------ runs


def test_runs_list_and_details(client, runs_dir):
    runs = client.get("/api/runs").json()
    assert [r["id"] for r in runs] == ["digits-tiny"]
    assert runs[0]["accuracy"] == pytest.approx(
        json.loads((runs_dir / "digits-tiny" / "metrics.json").read_text())["accuracy"])
    run = client.get("/api/runs/digits-tiny").json()
    assert run["model"] == "run:digits-tiny" and run["has_curves"]
    assert len(run["metrics"]["confusion"]) == len(run["class_names"])
    assert len(run["history"]["epoch"]) >= 1
    r = client.get("/api/runs/digits-tiny/curves.png")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("run_id", ["nope", "..", "...", "%2e%2e", "digits-tiny%2F..%2F..", "not-a-run"])
def test_run_ids_are_checked(client, run_id):
    r = client.get(f"/api/runs/{run_id}")
    assert r.status_code == 404 and "error" in r.json()


def test_runs_absent_without_a_runs_folder(builtin_model):
    with local_client(create_app(models=[builtin_model])) as c:
        assert c.get("/api/info").json()["capabilities"]["runs"] is False
        r = c.get("/api/runs")
        assert r.status_code == 404 and "--runs" in r.json()["error"]


def test_bad_runs_folder_is_a_clear_error(tmp_path):
    from convlens.errors import RunError

    with pytest.raises(RunError, match="not a directory"):
        create_app(models=["effnet-lite0"], runs_dir=tmp_path / "missing")


# ------------------------------------------------------------------ CAM

def test_cam_heatmap_peaks_on_the_cat_face(client, builtin_model):
    r = client.get("/api/cam", params={"image": "sample:chelsea", "method": "gradcam"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "gradcam" and body["layer"] == "bn2"
    assert body["target"]["index"] in CAT_CLASSES
    assert body["size"] == [451, 300]
    x, y = body["peak"]
    assert 120 <= x <= 330 and 30 <= y <= 280  # on the cat's face, not the background edges
    import base64

    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"].split(",", 1)[1])))
    assert heat.size == (451, 300) and heat.mode == "P"  # a palette PNG with a transparent entry
    heat = heat.convert("RGBA")
    alpha = np.asarray(heat)[..., 3]
    assert alpha[:, 0].max() == 0 and alpha[150, 225] == 255  # transparent where the crop did not look
    raw = Image.open(io.BytesIO(base64.b64decode(body["raw_png"].split(",", 1)[1])))
    assert raw.size == (224, 224)


def test_cam_target_and_method_change_the_answer(client):
    base = client.get("/api/cam", params={"image": "sample:chelsea"}).json()
    other = client.get("/api/cam", params={"image": "sample:chelsea", "target": "espresso"}).json()
    assert other["target"]["label"] == "espresso" and other["heatmap_png"] != base["heatmap_png"]
    eigen = client.get("/api/cam", params={"image": "sample:chelsea", "method": "eigencam", "layer": "blocks.5"}).json()
    assert eigen["method"] == "eigencam" and eigen["layer"] == "blocks.5"
    assert eigen["heatmap_png"] != base["heatmap_png"]
    assert "gradcam" in client.get("/api/info").json()["cam_methods"]


@pytest.mark.parametrize("params, words", [
    ({"method": "gradcam,eigencam"}, "one method"),
    ({"method": "magic"}, "unknown method"),
    ({"layer": "blocks.99"}, "did you mean"),
    ({"target": "not a class"}, "unknown class"),
    ({"target": "5000"}, "5000"),
])
def test_cam_bad_requests(client, params, words):
    r = client.get("/api/cam", params={"image": "sample:chelsea", **params})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]


def test_run_top_losses_with_cams(client, runs_dir):
    r = client.get("/api/runs/digits-tiny/top-losses", params={"k": 3})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 3
    losses = [it["loss"] for it in items]
    assert losses == sorted(losses, reverse=True) \
        and all(it["true"] != it["predicted"] or it["loss"] > 0 for it in items)
    assert all(it["image_png"].startswith("data:image/png") and it["cam_png"].startswith("data:image/png")
               for it in items)


def test_run_as_a_model(client):
    r = client.post("/api/predict", data={"image": "sample:chelsea", "model": "run:digits-tiny", "top_k": "3"},
                    files={"o": ("a", b"b")})
    assert r.status_code == 200, r.text
    assert all(p["label"] in [str(d) for d in range(10)] for p in r.json()["predictions"])


def _decoded(url: str) -> np.ndarray:
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA")).astype(int)


def test_cam_after_predict_comes_from_the_predict_pass(builtin_model, cat_png):
    """The default Grad-CAM of a predicted upload is computed in the predict forward: the
    following GET /api/cam runs no forward, and equals a fresh computation."""
    forwards = []
    handle = builtin_model.module.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        with local_client(create_app(models=[builtin_model])) as c:
            r = c.post("/api/predict", files={"file": ("chelsea.png", cat_png, "image/png")})
            assert r.status_code == 200 and len(forwards) == 1, r.text
            image_id = r.headers["x-convlens-image"]
            top = r.json()["predictions"][0]
            got = c.get("/api/cam", params={"image": image_id, "method": "gradcam"}).json()
            assert len(forwards) == 1  # served from the predict pass
            same = c.get("/api/cam", params={"image": image_id, "layer": "bn2"}).json()  # the default, named
            assert len(forwards) == 1 and same["heatmap_png"] == got["heatmap_png"]
            # the top class asked by index (a click on it in the page) is the same map
            by_index = c.get("/api/cam", params={"image": image_id, "target": str(top["index"])}).json()
            assert len(forwards) == 1 and by_index["heatmap_png"] == got["heatmap_png"]
            # the same class by label misses that cache: a fresh explain() forward to compare with
            fresh = c.get("/api/cam", params={"image": image_id, "target": top["label"]}).json()
            assert len(forwards) == 2
            other = c.get("/api/cam", params={"image": image_id, "target": "1"}).json()  # another class
            assert len(forwards) == 3 and other["target"]["index"] == 1
    finally:
        handle.remove()
    assert got["target"] == fresh["target"] and got["target"]["index"] == top["index"]
    assert got["target"]["probability"] == pytest.approx(top["probability"], abs=1e-6)
    assert got["layer"] == fresh["layer"] == "bn2" and got["size"] == fresh["size"] and got["peak"] == fresh["peak"]
    for k in ("heatmap_png", "raw_png"):
        assert np.abs(_decoded(got[k]) - _decoded(fresh[k])).max() <= 1, k


def test_predict_pass_cams_are_bounded_and_a_miss_computes_anew(builtin_model):
    app = create_app(models=[builtin_model])
    app.state.fresh_cams.capacity = 2
    with local_client(app) as c:
        ids = []
        for i in range(4):
            img = Image.new("RGB", (64, 48), (60 * i, 90, 200 - 40 * i))
            r = c.post("/api/predict", files={"file": (f"{i}.png", png_bytes(img), "image/png")})
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-convlens-image"])
        assert len(app.state.fresh_cams) == 2
        for image_id in (ids[0], ids[3]):  # evicted (computed again) and kept
            r = c.get("/api/cam", params={"image": image_id})
            assert r.status_code == 200 and r.json()["size"] == [64, 48], r.text


def test_featurevis_filters_and_images(client):
    r = client.get("/api/featurevis", params={"layer": "conv_stem", "channels": "0-1", "steps": 2, "size": 32})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filters_png"].startswith("data:image/png") and body["vis_png"].startswith("data:image/png")
    r = client.get("/api/featurevis", params={"layer": "nope"})
    assert r.status_code == 400 and "did you mean" in r.json()["error"]


def test_concurrent_predictions_run_as_one_batch(builtin_model, sample_photos):
    """Requests arriving while the worker is busy are coalesced into one forward pass."""
    import httpx

    app = create_app(models=[builtin_model])
    names = ["chelsea", "coffee", "astronaut", "rocket"] * 3

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            reqs = [c.post("/api/predict", data={"image": f"sample:{n}"}, files={"o": ("a", b"b")}) for n in names]
            return await asyncio.gather(*reqs)

    answers = asyncio.run(main())
    assert all(r.status_code == 200 for r in answers)
    assert [r.json()["image"] for r in answers] == [f"{n}.png" for n in names]
    queue = app.state.queue
    assert sum(queue.batches) == len(names) and max(queue.batches) > 1  # fewer forwards than requests
    single = builtin_model.predict([sample_photos["coffee"]])[0].to_dict()["predictions"]
    assert [p["index"] for p in answers[1].json()["predictions"]] == [p["index"] for p in single]
    app.state.queue.shutdown()


# ------------------------------------------------------------------ convlens serve


def test_serve_binds_loopback_and_warns_otherwise(monkeypatch, capsys):
    import uvicorn

    from convlens.cli import main
    from convlens.cli.cmd_serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", "--port", "8765"]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8765
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--max-upload-mb", "1"]) == 0
    assert calls[-1]["host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert "warning" in err and "reachable from other machines" in err


def test_serve_runs_keeps_the_builtin_model_first_and_default(monkeypatch, runs_dir):
    """``serve --runs DIR`` adds the runs to the models: the built-in (or ``--model``) stays first
    and default, and the connection limits go to uvicorn (idle keep-alive, h11 head size)."""
    import uvicorn

    from convlens.cli import main
    from convlens.web.server import MAX_HEAD, TIMEOUT_KEEP_ALIVE, IdleTimeoutH11

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", "--runs", str(runs_dir)]) == 0
    app, kw = calls[-1]
    with local_client(app) as c:
        info = c.get("/api/info").json()
    assert info["default_model"] == "effnet-lite0" and info["models"][0] == "effnet-lite0"
    assert "run:digits-tiny" in info["models"]
    assert kw["http"] is IdleTimeoutH11 and kw["timeout_keep_alive"] == TIMEOUT_KEEP_ALIVE
    assert kw["h11_max_incomplete_event_size"] == MAX_HEAD and kw["limit_concurrency"] >= 32
    assert main(["serve", "--runs", str(runs_dir), "--model", "run:digits-tiny"]) == 0
    assert calls[-1][0].state.models.default == "run:digits-tiny"


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], "--port"),
    (["--queue", "0"], "--queue"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--model", "nope"], "unknown model"),
    (["--runs", "/nonexistent/runs"], "not a directory"),
])
def test_serve_bad_options(monkeypatch, capsys, args, words):
    import uvicorn

    from convlens.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("must not start"))
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_upload_store_is_bounded_by_count_and_pixels():
    from convlens.web.state import ImageStore

    store = ImageStore(samples=(), max_uploads=3, max_upload_pixels=10_000)
    ids = [store.add(png_bytes(Image.new("RGB", (40, 40), (i, 0, 0))), f"{i}.png").id for i in range(4)]
    with pytest.raises(Exception, match="expired"):
        store.get(ids[0])  # the oldest went first (count)
    assert store.get(ids[3]).name == "3.png"
    big = store.add(png_bytes(Image.new("RGB", (90, 90))), "big.png")  # 8100 px + 1600 fits, not more
    assert store.get(big.id) and store.get(ids[3]) and len(store._uploads) == 2


def test_score_route_gives_deletion_and_insertion_with_baselines(client):
    r = client.get("/api/score", params={"image": "sample:chelsea", "method": "gradcam", "steps": 4})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["image"] == "sample:chelsea" and doc["figure_png"].startswith("data:image/png;base64,")
    text = json.dumps(doc)
    for word in ("gradcam", "random", "centre", "deletion", "insertion"):
        assert word in text
    assert client.get("/api/score", params={"image": "sample:chelsea", "method": "gradcam", "steps": 4}).json() == doc
    for params, code in [({"method": "nope"}, 400), ({"steps": 0}, 422), ({"steps": 99}, 422),
                         ({"method": "gradcam,gradcam++,layercam,eigencam,scorecam"}, 400)]:
        bad = client.get("/api/score", params={"image": "sample:chelsea", **params})
        assert bad.status_code == code, (params, bad.status_code, bad.text)
    assert client.get("/api/score", params={"image": "sample:nope"}).status_code == 404


def test_compare_two_runs_of_the_same_data(builtin_model, runs_dir, tmp_path):
    import shutil

    from convlens.train import train

    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "digits-tiny", root / "digits-tiny")
    train("digits", arch="fc32", epochs=2, batch_size=64, seed=0, out=str(root / "digits-dense"), progress=False)
    app = create_app(models=[builtin_model], runs_dir=root)
    with local_client(app) as c:
        r = c.get("/api/compare", params=[("run", "digits-tiny"), ("run", "digits-dense"), ("top", "3")])
        assert r.status_code == 200, r.text
        doc = r.json()
        assert [row["run"] for row in doc["runs"]] == ["digits-tiny", "digits-dense"]
        assert all("path" not in row and row["params"] > 0 for row in doc["runs"])
        assert doc["figure_png"].startswith("data:image/png;base64,") and str(root) not in r.text
        assert doc["common_test_images"] > 0 and len(doc["class_names"]) == 10
        for params, code in [([("run", "digits-tiny")], 400), ([("run", "digits-tiny"), ("run", "digits-tiny")], 400),
                             ([("run", "digits-tiny"), ("run", "nope")], 404), ([], 422)]:
            bad = c.get("/api/compare", params=params)
            assert bad.status_code == code and "error" in bad.json(), (params, bad.status_code, bad.text)
        page = c.get("/").text
        assert 'id="compare-form"' in page and 'id="compare-figure"' in page


def test_the_app_serves_again_after_its_lifespan_ends(builtin_model):
    """A second lifespan (a test client per request, as schemathesis uses; a server restarted
    in-process) restarts the work queue instead of failing on shut-down thread pools."""
    app = create_app(models=[builtin_model])
    for _ in range(2):
        with local_client(app) as c:
            assert c.get("/api/layers").status_code == 200
