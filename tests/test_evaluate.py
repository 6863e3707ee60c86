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
    out = ev.save(tmp_path / "eval")
    conf = Image.open(out / "confusion.png")
    assert conf.size[0] > 300
    grid = Image.open(out / "top_losses.png")
    assert grid.size[1] > 6 * 100  # one row per mistake
    assert json.loads((out / "metrics.json").read_text())["n_test"] == 359
    assert ev._repr_png_().startswith(b"\x89PNG")


def test_top_losses_include_gradcam_for_both_classes_when_cam_exists(run_dir):
    pytest.importorskip("convlens.lens.cam")
    ev = evaluate(run_dir, top_n=3)
    assert ev.top_cams is not None and len(ev.top_cams) == 3
    true_map, pred_map = (np.asarray(im, dtype=float) for im in ev.top_cams[0])
    assert true_map.shape == pred_map.shape and not np.array_equal(true_map, pred_map)


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
