"""Evaluation: metrics against hand-computed values, pictures, top losses, Grad-CAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.train import evaluate, metrics_from_logits, train


def test_metrics_match_hand_computation():
    # true:  a a a b b c ; pred: a a b b c c
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(pred, 3).float()
    m = metrics_from_logits(logits, y, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    f1 = [0.8, 0.5, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3) and m["n_test"] == 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "run"
    train("digits", arch="conv16-bn-pool-conv32-bn-pool-fc64", epochs=4, batch_size=64, out=str(out),
          progress=False)
    return out


def test_evaluate_reproduces_training_metrics_and_writes_pictures(run_dir, tmp_path):
    ev = evaluate(run_dir, top_n=6)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert ev.metrics["accuracy"] == saved["accuracy"] and ev.metrics["confusion"] == saved["confusion"]
    d = ev.to_dict()
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion", "n_test"):
        assert key in d
    assert d["n_test"] == 359 and set(d["per_class"]) == {str(i) for i in range(10)}
    losses = [r["loss"] for r in ev.top_losses]
    assert losses == sorted(losses, reverse=True) and len(losses) == 6
    worst = ev.top_losses[0]
    assert worst["true"] != worst["predicted"] and worst["p_true"] < worst["p_predicted"]
    before = ev.to_dict()
    saved = ev.save(tmp_path / "eval")
    assert saved.dir == tmp_path / "eval" and ev.to_dict() == before  # to_dict is pure
    conf = Image.open(saved.first("confusion"))
    assert conf.size[0] > 300 and saved.first("confusion").name == "confusion.png"
    grid = Image.open(saved.first("top_losses"))
    assert grid.size[1] > 6 * 100  # one row per mistake
    assert json.loads(saved.first("metrics").read_text())["n_test"] == 359
    maps = np.load(saved.first("heatmap"))
    assert maps.shape[:2] == (6, 2) and maps.min() >= 0 and maps.max() <= 1
    assert [r["rank"] for r in saved.records] == list(range(1, 7))
    assert not list((tmp_path / "eval").glob(".*tmp"))
    assert ev._repr_png_().startswith(b"\x89PNG")
    fig = ev.figure()
    assert fig.width > conf.width + grid.width // 2 and fig.height >= conf.height  # confusion beside the top losses


def test_evaluate_figure_leaves_no_large_blank_area(run_dir):
    """The top losses are laid out in blocks side by side, the per-class table fills the space under
    the confusion matrix: the picture is about as tall as its tallest part, not 9 rows tall."""
    ev = evaluate(run_dir, top_n=9)
    fig = np.asarray(ev.figure().convert("L"))
    conf = ev.confusion_figure()
    grid = ev.top_losses_figure()
    assert fig.shape[0] < 0.6 * grid.height
    left = fig[:, :conf.width]
    blank_rows = (left.min(axis=1) >= 250).mean()  # rows of the left column with nothing drawn
    assert blank_rows < 0.3, blank_rows
    assert (fig >= 250).mean() < 0.75


def test_an_all_zero_gradcam_says_there_is_no_positive_evidence(monkeypatch):
    import importlib
    from types import SimpleNamespace

    ev_mod = importlib.import_module("convlens.train.evaluate")  # the package's `evaluate` is the verb

    maps = torch.zeros(1, 2, 8, 8)
    maps[0, 0, 2, 2] = 1.0  # the true class has evidence, the predicted one none
    flat = Image.new("RGB", (28, 28), (0, 0, 128))
    monkeypatch.setattr(ev_mod, "explain",
                        lambda *a, **k: SimpleNamespace(heatmaps=maps, overlay=lambda i, t, **kw: flat))
    model = SimpleNamespace(device="cpu")
    heat, overlays = ev_mod.top_loss_cams(model, torch.zeros(1, 1, 28, 28), [0], [1])
    true_img, pred_img = overlays[0]
    assert true_img is flat  # untouched
    assert pred_img.size[0] >= 192 and ev_mod.NO_EVIDENCE == "no positive evidence for this class"
    arr = np.asarray(pred_img)
    assert (arr == 255).all(axis=-1).any() and ((arr[..., 0] > 100) & (arr[..., 1] < 60)).any()  # band + red text


def test_top_losses_include_gradcam_for_both_classes(run_dir):
    ev = evaluate(run_dir, top_n=3)
    assert ev.top_cams is not None and len(ev.top_cams) == 3 and ev.cams_note is None
    true_map, pred_map = (np.asarray(im, dtype=float) for im in ev.top_cams[0])
    assert true_map.shape == pred_map.shape and not np.array_equal(true_map, pred_map)
    assert ev.top_heatmaps.shape[:2] == (3, 2) and not torch.equal(ev.top_heatmaps[0, 0], ev.top_heatmaps[0, 1])


def test_a_model_without_a_layer_to_explain_says_why_it_has_no_cams(tmp_path):
    out = tmp_path / "fc"
    train("digits", arch="fc16", epochs=1, batch_size=128, out=str(out), progress=False)
    ev = evaluate(out, top_n=2)
    assert ev.top_cams is None and ev.top_heatmaps is None
    assert "no convolutional layer" in ev.cams_note and ev.to_dict()["cams_note"] == ev.cams_note
    saved = ev.save(tmp_path / "ev")
    assert "heatmap" not in saved.files and saved.first("top_losses").is_file()


def test_bad_arguments_name_the_parameter(run_dir):
    from convlens.errors import SpecError

    with pytest.raises(SpecError, match="top_n must be at least 0") as info:
        evaluate(run_dir, top_n=-1)
    assert info.value.param == "top_n"


def test_evaluate_notices_changed_data(run_dir, tmp_path):
    import shutil

    from convlens.errors import RunError

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    splits = json.loads((copy / "splits.json").read_text())
    splits["test"][0] = "#99999"
    (copy / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(RunError, match="no longer in the data source.*#99999"):
        evaluate(copy)
