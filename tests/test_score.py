"""``score`` (convlens/lens/score.py) and ``sanity`` (convlens/lens/sanity.py): meaning on real photos,
boxes through the preprocessing geometry, the View contract, restoring the model, every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl
from convlens.errors import SpecError
from convlens.lens import sanity as sanity_mod
from convlens.lens.sanity import sanity
from convlens.lens.score import BASELINES, METRICS, box_mask, load_boxes, parse_metrics, random_maps, score
from convlens.models.preprocess import Preprocess
from convlens.view import Saved, View

#: hand boxes on ../shared/data/photos/both.png (224 x 224): the bulldog above, the tabby cat below
BOTH_BOXES = {"both.png": {"243": [[75, 10, 165, 148]], "282": [[40, 120, 200, 224]]}}


@pytest.fixture(scope="module")
def real_images(photos, sample_photos):
    """The ImageNet photos (the readable ones) and scikit-image's samples."""
    ours = [p for p in sorted(photos.iterdir()) if p.name != "truncated.jpg"]
    return [str(p) for p in ours] + [str(p) for p in sample_photos.values()]


@pytest.fixture(scope="module")
def scored(builtin_model, real_images):
    return score(builtin_model, real_images, method="gradcam", metric="deletion,insertion", steps=8, batch_size=32)


@pytest.mark.slow
def test_gradcam_beats_the_random_map_on_real_photos(scored, real_images):
    assert scored.methods == ["gradcam", *BASELINES]
    d, i = scored.values["deletion"], scored.values["insertion"]
    assert d.shape == (3, len(real_images), 1)
    # gradcam (0) vs random (1): lower deletion AUC, higher insertion AUC on average
    assert float(d[0].mean()) < float(d[1].mean())
    assert float(i[0].mean()) > float(i[1].mean())
    # and on each half: the photos folder and scikit-image's samples
    half = len(real_images) - 4
    for sl in (slice(0, half), slice(half, None)):
        assert float(d[0, sl].mean()) < float(d[1, sl].mean()) and float(i[0, sl].mean()) > float(i[1, sl].mean())
    rows = {(r["method"], r["metric"]): r for r in scored.summary()}
    r = rows[("gradcam", "insertion")]
    assert r["low"] <= r["mean"] <= r["high"] and r["n"] == len(real_images)
    assert scored.ranking("insertion")[0] != "random"


def test_scores_are_a_view(scored, tmp_path):
    assert isinstance(scored, View)
    before = json.dumps(scored.to_dict(), sort_keys=True)
    img = scored.figure()
    assert isinstance(img, Image.Image) and img.width > 300
    saved = scored.save(tmp_path / "s")
    assert isinstance(saved, Saved) and all(p.is_file() for p in saved.paths())
    assert json.dumps(scored.to_dict(), sort_keys=True) == before
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["summary"] == json.loads(before)["summary"]
    assert len(saved["csv"]) == len(scored.images) == len(saved["curves"])
    assert scored._repr_png_().startswith(b"\x89PNG")
    # the bootstrap is seeded: the same intervals again
    assert scored.summary() == scored.summary()


def test_pointing_game_on_both_png(builtin_model, photos):
    res = score(builtin_model, [str(photos / "both.png")], method="gradcam", metric="pointing,energy",
                target=[243, 282], boxes=BOTH_BOXES)
    hit = res.values["pointing"]  # (M, 1, 2)
    assert [s.index for s in res.targets[0]] == [243, 282]
    assert hit[0, 0].tolist() == [1.0, 1.0]  # gradcam hits the dog and the cat
    e = res.values["energy"]
    assert float(e[0].mean()) > float(e[1].mean())  # more energy in the boxes than the random map
    # the boxes swapped between the classes: gradcam misses both
    swapped = {"both.png": {"243": BOTH_BOXES["both.png"]["282"], "282": BOTH_BOXES["both.png"]["243"]}}
    miss = score(builtin_model, [str(photos / "both.png")], method="gradcam", metric="pointing", target=[243, 282],
                 boxes=swapped).values["pointing"]
    assert miss[0, 0].tolist() == [0.0, 0.0]


def test_boxes_map_through_the_crop_without_swapping_x_and_y():
    cfg = Preprocess(input_size=(3, 32, 32), crop_pct=1.0)
    # a 64 x 32 (w x h) picture: resized to 64 x 32, the centre 32 x 32 kept: x 16..48, y 0..32
    assert cfg.crop_box(64, 32) == (16.0, 0.0, 48.0, 32.0)
    m = box_mask(cfg, (64, 32), [[16, 0, 32, 8]], "wide.png")  # left half of the crop, top quarter
    assert m.shape == (32, 32)
    assert m[:8, :16].all() and not m[8:].any() and not m[:, 16:].any()
    with pytest.raises(SpecError, match="outside the image"):
        box_mask(cfg, (64, 32), [[0, 0, 40, 40]], "wide.png")  # y1 = 40 > height 32
    with pytest.raises(SpecError, match="crop cut"):
        box_mask(cfg, (64, 32), [[0, 0, 10, 10]], "wide.png")


def test_boxes_from_json_and_csv(tmp_path):
    j = tmp_path / "b.json"
    j.write_text(json.dumps({"a.png": [[0, 0, 5, 5]], "b.png": [1, 1, 4, 4]}))
    assert load_boxes(str(j)) == {"a.png": [[0, 0, 5, 5]], "b.png": [[1, 1, 4, 4]]}
    c = tmp_path / "b.csv"
    c.write_text("image,x0,y0,x1,y1,target\na.png,0,0,5,5,243\na.png,1,1,2,2,\n")
    assert load_boxes(str(c)) == {"a.png": {"243": [[0, 0, 5, 5]], "*": [[1, 1, 2, 2]]}}
    c.write_text("image,x0,y0,x1,y1\na.png,0,0,5,5\n")
    assert load_boxes(str(c)) == {"a.png": [[0, 0, 5, 5]]}


def test_baselines():
    r = random_maps((2, 1, 64, 64), seed=3)
    assert torch.equal(r, random_maps((2, 1, 64, 64), seed=3)) and not torch.equal(r, random_maps((2, 1, 64, 64), 4))
    assert 0 <= float(r.min()) and float(r.max()) <= 1


@pytest.mark.parametrize("kwargs, param, text", [
    ({"metric": "delet"}, "metric", "did you mean: deletion"),
    ({"metric": "pointing"}, "boxes", "needs boxes"),
    ({"steps": 0}, "steps", "steps must be"),
    ({"steps": 10**6}, "steps", "up to 1000"),
    ({"steps": 2.0}, "steps", "steps must be"),
    ({"tolerance": float("nan")}, "tolerance", "finite"),
    ({"tolerance": float("inf")}, "tolerance", "finite"),
    ({"tolerance": -1}, "tolerance", "tolerance"),
    ({"metric": "pointing", "boxes": {"nothere.png": [[0, 0, 5, 5]]}}, "boxes", "not among the images"),
    ({"metric": "energy", "boxes": {"chelsea.png": [[0, 0, 5000, 5]]}}, "boxes", "outside the image"),
    ({"metric": "energy", "boxes": {"chelsea.png": [[5, 5, 1, 1]]}}, "boxes", "empty"),
    ({"metric": "energy", "boxes": {"chelsea.png": "x"}}, "boxes", "expected a list"),
])
def test_bad_input_one_clear_error(builtin_model, sample_photos, kwargs, param, text):
    with pytest.raises(SpecError, match=text) as e:
        score(builtin_model, [str(sample_photos["chelsea"])], **kwargs)
    assert e.value.param == param
    assert "\n" not in str(e.value)


def test_parse_metrics():
    assert parse_metrics("all") == list(METRICS)
    assert parse_metrics("Deletion, road_morf") == ["deletion", "road-morf"]
    with pytest.raises(SpecError, match="empty"):
        parse_metrics(" , ")


def test_boxes_file_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_boxes(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_boxes(str(bad))
    csv_ = tmp_path / "bad.csv"
    csv_.write_text("name,a\nx,1\n")
    with pytest.raises(SpecError, match="columns"):
        load_boxes(str(csv_))


# -- sanity --------------------------------------------------------------------------------------

def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_sanity_randomisation_breaks_the_cams_not_the_edges(builtin_model, sample_photos):
    before = _state(builtin_model.module)
    res = sanity(builtin_model, [str(sample_photos["chelsea"]), str(sample_photos["coffee"])],
                 method="gradcam,gradcam++")
    after = builtin_model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored bitwise
    assert res.methods == ["gradcam", "gradcam++", "edge"]
    assert res.stages[0] == "original" and res.stages[1] == "head" and len(res.stages) >= 5
    rows = res.rows()
    last = len(res.stages) - 1
    for r in rows:
        if r["stage"] == 0:
            assert r["spearman"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0)
        if r["stage"] == last and r["method"] != "edge":
            assert r["spearman"] < 0.5, r
        if r["method"] == "edge":
            assert r["spearman"] > 0.99
    assert isinstance(res, View) and isinstance(res.figure(), Image.Image)


def test_sanity_restores_the_model_on_errors(builtin_model, sample_photos, monkeypatch):
    before = _state(builtin_model.module)
    calls = []

    def failing(real):
        def run(*a, **k):  # the third pass (stage 2) fails
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("boom")
            return real(*a, **k)
        return run

    monkeypatch.setattr(sanity_mod, "explain", failing(sanity_mod.explain))
    with pytest.raises(RuntimeError, match="boom"):
        sanity(builtin_model, [str(sample_photos["chelsea"])], method="gradcam")
    assert len(calls) == 3
    after = builtin_model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sanity_needs_parameters():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    lm = cl.load_model(net, input_size=(3, 16, 16), class_names=["a", "b", "c"])
    with pytest.raises(SpecError, match="no parameters") as e:
        sanity(lm, torch.rand(1, 3, 16, 16), method="gradcam")
    assert e.value.param == "model"


def test_road_and_drop_through_score(builtin_model, sample_photos):
    res = score(builtin_model, [str(sample_photos["chelsea"])], method="gradcam",
                metric="road-morf,road-lerf,road,avgdrop,increase", batch_size=16)
    assert res.metrics == ["road-morf", "road-lerf", "road", "avgdrop", "increase"]
    assert res.road_curves["morf"].shape == (3, 1, 1, 5)
    v = res.values
    assert torch.allclose(v["road"], ((res.road_curves["lerf"] - res.road_curves["morf"]) / 2).mean(-1))
    assert float(v["road-morf"][0].mean()) < float(v["road-lerf"][0].mean())  # removing the CAM's top hurts more
    assert ((v["avgdrop"] >= 0) & (v["avgdrop"] <= 100)).all()
    assert set(v["increase"].flatten().tolist()) <= {0.0, 100.0}


def test_mask_images_as_regions(tmp_path):
    """Masks (a folder named after the images, or paths in the JSON) give the same regions as boxes."""
    from PIL import Image as _Image

    from convlens.lens.score import RegionMask, box_distance

    cfg = Preprocess(input_size=(3, 32, 32), crop_pct=1.0)
    arr = np.zeros((32, 64), np.uint8)
    arr[0:8, 16:32] = 255  # the box [16, 0, 32, 8] of the boxes test, drawn
    masks = tmp_path / "masks"
    masks.mkdir()
    _Image.fromarray(arr).save(masks / "wide.png")
    table = load_boxes(str(masks))
    (m,) = table["wide.png"]
    assert isinstance(m, RegionMask) and m.inside.sum() == 16 * 8
    assert torch.equal(box_mask(cfg, (64, 32), [m], "wide.jpg"), box_mask(cfg, (64, 32), [[16, 0, 32, 8]], "wide.jpg"))
    assert torch.allclose(box_distance(cfg, (64, 32), [m]), box_distance(cfg, (64, 32), [[16, 0, 32, 8]]), atol=1.0)
    j = tmp_path / "b.json"
    j.write_text(json.dumps({"wide.jpg": {"243": "masks/wide.png", "*": [[0, 0, 4, 4]]}}))
    t = load_boxes(str(j))["wide.jpg"]
    assert isinstance(t["243"][0], RegionMask) and t["*"] == [[0, 0, 4, 4]]
    # bad masks: missing, empty, wrong size
    j.write_text(json.dumps({"wide.jpg": "masks/nothere.png"}))
    with pytest.raises(SpecError, match="nothere.png does not exist"):
        load_boxes(str(j))
    _Image.fromarray(np.zeros((32, 64), np.uint8)).save(masks / "empty.png")
    j.write_text(json.dumps({"wide.jpg": "masks/empty.png"}))
    with pytest.raises(SpecError, match="empty"):
        load_boxes(str(j))
    with pytest.raises(SpecError, match="64 x 32 pixels, the image 32 x 32"):
        box_mask(cfg, (32, 32), [m], "square.png")
    (tmp_path / "void").mkdir()
    with pytest.raises(SpecError, match="no mask image"):
        load_boxes(str(tmp_path / "void"))


@pytest.mark.parametrize("size", [(224, 224), (28, 28), (60, 64), (7, 9)])
def test_reference_cached_ssim_equals_scikit_image(size):
    """SSIM against fixed references (their local statistics computed once), pair by pair, threaded
    or not: scikit-image's values to 1e-5 (our box sums are float32; 2.7e-6 measured on 224 px),
    constant maps and the smallest window-sized maps included, a map with itself exactly 1; maps
    smaller than the window are a clear error, not a traceback."""
    from skimage.metrics import structural_similarity

    from convlens.lens.sanity import SSIM

    g = torch.Generator().manual_seed(size[0])
    ref = torch.nn.functional.interpolate(torch.rand(6, 1, 7, 7, generator=g), size=size, mode="bilinear")[:, 0]
    maps = torch.rand(6, *size, generator=g)
    maps[0] = 0.5  # constant
    maps[1] = ref[1]  # identical
    want = torch.tensor([structural_similarity(m.numpy(), r.numpy(), data_range=1.0) for m, r in zip(maps, ref)],
                        dtype=torch.float32)
    s = SSIM(ref)
    assert torch.allclose(s(maps), want, atol=1e-5, rtol=0)
    assert torch.equal(s(maps, workers=2), s(maps))
    assert s(maps)[1] == 1.0
    with pytest.raises(SpecError, match="at least 7 x 7"):
        SSIM(torch.rand(2, 6, 20))


def test_sanity_threaded_ssim_equals_scikit_image(builtin_model, sample_photos):
    """The sanity check's SSIM, spread over torch's threads, equals scikit-image's pair by pair."""
    from convlens.lens.cam import explain
    from convlens.lens.sanity import ssim

    paths = [str(sample_photos[n]) for n in ("chelsea", "coffee", "rocket")]
    ours = explain(builtin_model, paths, method="gradcam,layercam", target=torch.tensor([[285], [967], [812]])).maps
    # the threaded SSIM equals scikit-image's, pair by pair
    from skimage.metrics import structural_similarity

    a, b = ours[0, :, 0], ours[1, :, 0]
    ref = [structural_similarity(p.double().numpy(), q.double().numpy(), data_range=1.0) for p, q in zip(a, b)]
    assert torch.allclose(ssim(a, b), torch.tensor(ref, dtype=torch.float32), atol=1e-5, rtol=0)


def test_deletion_insertion_with_one_step_is_the_two_end_points():
    """steps=1 (the documented minimum) used to fail (no interior point: an IndexError); its curve is the
    image's and the baseline's probability, whatever the map and the batch size."""
    from convlens.lens import faithfulness as fa

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 5)).eval()
    x, maps, t = torch.rand(3, 3, 16, 16), torch.rand(3, 16, 16), torch.tensor([1, 3, 0])
    p = fa.target_probs(net, x, t, fold=False)
    p0 = fa.target_probs(net, torch.zeros_like(x), t, fold=False)
    for batch in (1, 2, 64):
        fractions, de, ins = fa.deletion_insertion(net, x, maps, t, steps=1, batch_size=batch, fold=False)
        assert fractions.tolist() == [0.0, 1.0]
        assert torch.allclose(de, torch.stack([p, p0], 1)) and torch.allclose(ins, torch.stack([p0, p], 1))
