"""Architectures from a spec, the Fabric fit loop, run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.errors import ConvlensError, RunError, SpecError
from convlens.models.arch import SEED_KERAS_ARCH
from convlens.render.files import MARKER
from convlens.train import Run, build_arch, evaluate, train

SMALL = "conv16-bn-pool-conv32-bn-pool-fc64-drop0.1"


# -- the arch grammar ---------------------------------------------------------------------

def test_spec_builds_the_layers_it_names():
    net = build_arch("conv8k5-bn-maxpool2-conv16-avgpool2-gap-fc32-bn-drop0.5", (3, 32, 32), 7)
    names = dict(net.named_modules())
    assert names["features.conv1.conv"].kernel_size == (5, 5)
    assert isinstance(names["features.conv1.bn"], torch.nn.BatchNorm2d)  # bn folded before the ReLU
    assert isinstance(names["features.pool2"], torch.nn.AvgPool2d)
    assert isinstance(names["head.fc1.bn"], torch.nn.BatchNorm1d)
    assert names["head.drop1"].p == 0.5 and names["head.classifier"].out_features == 7
    assert net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_model_takes_raw_pixels_and_normalises_inside():
    net = build_arch("conv4-gap", (1, 8, 8), 2, mean=[0.5], std=[0.25]).eval()
    x = torch.full((1, 1, 8, 8), 127.5)
    assert torch.allclose(net.rescale(x), torch.zeros_like(x))  # (127.5/255 - 0.5) / 0.25 = 0


def test_seed_keras_arch_matches_the_course_model():
    net = build_arch(SEED_KERAS_ARCH, (1, 60, 64), 20)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert [f.out_features for f in fcs] == [128, 64, 20] and fcs[0].in_features == 128 * 7 * 8


@pytest.mark.parametrize("spec, msg", [
    ("conv32-pol", "unknown token 'pol' at position 2.*did you mean: pool"),
    ("conv32--fc3", "empty token at position 2"),
    ("fc10-conv3", "'conv3' at position 2 comes after"),
    ("conv8-drop1.5", "unknown token 'drop1.5'"),
    ("conv0", "at least 1"),
    ("pool-drop0.1", "needs at least one conv or fc"),
    ("timm:", "needs a model name"),
])
def test_bad_arch_names_the_token_and_the_grammar(spec, msg):
    with pytest.raises(SpecError, match=msg) as exc:
        build_arch(spec, (1, 8, 8), 2)
    assert "\n" not in str(exc.value)


def test_too_much_pooling_is_a_clear_error():
    with pytest.raises(SpecError, match="token 'pool' at position 5 shrinks the 8x8 input"):
        build_arch("conv8-pool-pool-pool-pool", (1, 8, 8), 2)


def test_transfer_backbone_adapts_grayscale_and_size(builtin_model):
    net = build_arch("effnet-lite0", (1, 30, 32), 5).eval()
    assert net.adapter.size == (224, 224) and net.classifier.out_features == 5
    x = torch.randint(0, 256, (2, 1, 30, 32)).float()
    assert net(x).shape == (2, 5) and net.features(x).shape == (2, 1280)
    # the backbone kept the built-in ImageNet weights
    a = net.backbone.conv_stem.weight
    b = builtin_model.module.conv_stem.weight
    assert torch.equal(a, b)


# -- training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    run = train("digits", arch=SMALL, epochs=6, batch_size=64, seed=0, out=str(out), progress=False,
                augment="rotate=8,translate=0.05")
    return run


def test_digits_run_learns_and_is_written(digits_run):
    run = digits_run
    assert run.metrics["accuracy"] >= 0.95 and run.metrics["n_test"] == 359
    files = sorted(p.name for p in Path(run.path).iterdir())
    assert files == sorted(["config.json", "splits.json", "weights.safetensors", "history.csv",
                            "curves.png", "metrics.json", MARKER])
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["arch"]["spec"] == SMALL and cfg["class_names"] == [str(i) for i in range(10)]
    assert cfg["input_size"] == [1, 8, 8] and cfg["train"]["seed"] == 0
    assert cfg["train"]["augment"] == "rotate=8,translate=0.05" and "torch" in cfg["versions"]
    splits = json.loads((run.path / "splits.json").read_text())
    assert len(splits["test"]) == 359 and not set(splits["test"]) & set(splits["train"])
    hist = (run.path / "history.csv").read_text().splitlines()
    assert hist[0].startswith("phase,epoch,train_loss") and len(hist) == 1 + len(run.history)
    # loss fell during training
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"] / 2
    assert not list(Path(run.path).parent.glob(".digits.tmp-*"))  # nothing half-written left


def test_run_loads_as_lens_model_and_predicts(digits_run):
    from convlens.data import load_source
    from convlens.models import load_model

    lm = load_model(str(digits_run.path))
    assert lm.config.input_size == (1, 8, 8) and lm.config.mean == (0.0,)
    assert lm.config.std == pytest.approx((1 / 255,)) and lm.config.crop_pct == 1.0
    assert lm.class_names == [str(i) for i in range(10)]
    ds = load_source("digits")
    test_ids = digits_run.splits["test"][:40]
    idx = [ds.ids.index(i) for i in test_ids]
    pics = [Image.fromarray(ds.images[i, 0].numpy()) for i in idx]  # PIL files the way users have them
    preds = lm.predict(pics, top_k=1)
    hits = sum(int(p.top.label) == int(ds.labels[i]) for p, i in zip(preds, idx))
    assert hits >= 36  # the same ~95%+ through the ordinary preprocessing path
    assert lm.layers()["features.conv1.conv"].output_shape == (16, 8, 8)


def test_run_is_the_one_reader_of_run_directories(digits_run, tmp_path):
    from convlens.data import load_source
    from convlens.models import LensModel
    from convlens.models.run import Run as NounRun
    from convlens.view import Saved, View

    assert Run is NounRun and isinstance(digits_run, View)
    lazy = Run.load(digits_run.path, weights=False)  # a listing reads no weights
    assert lazy._module is None
    row = lazy.summary()
    assert row["id"] == digits_run.path.name and row["arch"] == SMALL and row["classes"] == 10
    assert row["accuracy"] == digits_run.metrics["accuracy"] and row["epochs"] == len(digits_run.history)
    assert row["created"] and row["n_test"] == 359 and json.dumps(row)
    cols = lazy.history_columns()
    assert cols["epoch"] == [r["epoch"] for r in digits_run.history]
    lm = lazy.model()  # the weights are read now
    assert isinstance(lm, LensModel) and lm.class_names == digits_run.class_names
    ds, split = lazy.dataset()
    assert [ds.ids[i] for i in split.test.tolist()] == digits_run.splits["test"]
    ds2, split2 = lazy.dataset(load_source("digits"))
    assert torch.equal(split2.test, split.test)
    fig = lazy.figure()
    assert isinstance(fig, Image.Image) and fig.width > 300
    saved = lazy.save(tmp_path / "copy")
    assert isinstance(saved, Saved) and saved.first("weights").is_file() and saved.first("curves").is_file()
    assert {p.name for p in saved.paths()} == {p.name for p in Path(digits_run.path).iterdir()}
    assert Run.load(tmp_path / "copy").model()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_same_seed_same_metrics_on_cpu():
    kw = dict(arch="conv8-bn-pool-fc32", epochs=2, batch_size=64, seed=3, progress=False,
              augment="rotate=10,flip=h")
    a, b = train("digits", **kw), train("digits", **kw)
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "confusion")
    assert all(a.metrics[k] == b.metrics[k] for k in keys)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    c = train("digits", **{**kw, "seed": 4})
    assert [r["train_loss"] for r in c.history] != [r["train_loss"] for r in a.history]


def test_existing_run_is_refused_unless_force(digits_run, tmp_path):
    with pytest.raises(RunError, match="already exists.*pass force") as info:
        train("digits", arch="conv4-fc8", epochs=1, out=str(digits_run.path), progress=False)
    assert info.value.param == "force"
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(SpecError, match="holds files convlens did not write"):  # not a convlens output
        train("digits", arch="conv4-gap", epochs=1, out=str(out), force=True, progress=False)
    assert (out / "old.txt").read_text() == "x"
    (out / MARKER).write_text("{}")  # an earlier convlens output: replaced
    run = train("digits", arch="conv4-gap", epochs=1, out=str(out), force=True, progress=False)
    assert not (out / "old.txt").exists() and (out / "weights.safetensors").is_file()
    assert run.config["arch"]["spec"] == "conv4-gap"


def test_stop_at_goal_and_early_stopping():
    run = train("digits", arch=SMALL, epochs=30, batch_size=64, stop_at="train_accuracy=0.6", progress=False)
    assert run.metrics["stopped"] == "goal" and len(run.history) < 30
    assert run.history[-1]["train_accuracy"] >= 0.6 and run.history[-2]["train_accuracy"] < 0.6
    # nothing can improve at lr=0 (no batch norm, no dropout): patience 2 stops after epoch 3
    run = train("digits", arch="conv4-gap", epochs=30, lr=0.0, patience=2, schedule="constant", progress=False)
    assert run.metrics["stopped"] == "early-stopping" and len(run.history) == 3
    with pytest.raises(SpecError, match="unknown metric 'acc'"):
        train("digits", stop_at="acc=0.9", progress=False)


def test_ctrl_c_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    from convlens.train import fit

    calls = {"n": 0}
    real = fit._Reporter.epoch

    def interrupt_on_third(self, row, total):
        calls["n"] += 1
        real(self, row, total)
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit._Reporter, "epoch", interrupt_on_third)
    run = train("digits", arch=SMALL, epochs=10, batch_size=64, out=str(tmp_path / "r"), progress=False)
    assert run.metrics["stopped"] == "interrupted" and len(run.history) == 3
    assert (tmp_path / "r" / "weights.safetensors").is_file() and run.metrics["accuracy"] > 0.5
    best = min(range(3), key=lambda i: run.history[i]["val_loss"])
    assert run.config["result"]["best_epoch"] == best + 1


def _shapes(root: Path, n: int = 24) -> Path:
    """Two classes of synthetic 32x32 pictures: stripes and dots."""
    rng = np.random.default_rng(0)
    for name in ("stripes", "dots"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.full((32, 32), 30, np.uint8)
            if name == "stripes":
                a[:, (np.arange(32) // 3 + i) % 2 == 0] = 220
            else:
                for _ in range(6):
                    y, x = rng.integers(3, 29, 2)
                    a[y - 2:y + 2, x - 2:x + 2] = 220
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_finetune_follows_the_frozen_head_at_a_lower_rate(tmp_path, builtin_model):
    root = _shapes(tmp_path / "shapes", n=12)
    run = train(f"folder:{root}", arch="effnet-lite0", freeze=True, epochs=10, batch_size=8, lr=1e-2,
                finetune_epochs=1, augment="flip=h", progress=False)
    assert [r["phase"] for r in run.history] == ["head"] * 10 + ["finetune"]
    assert run.history[-1]["lr"] < 1e-2 and run.metrics["accuracy"] == 1.0
    # the kept weights are the best epoch's: a fine-tuned backbone only if fine-tuning improved validation loss
    changed = not torch.equal(run.module.backbone.conv_stem.weight, builtin_model.module.conv_stem.weight)
    assert changed == run.history[-1]["best"]


def test_frozen_transfer_caches_features_and_trains_the_head(tmp_path, monkeypatch):
    """Two classes of synthetic pictures through the frozen built-in backbone: one forward per image."""
    from convlens.models import arch as arch_mod

    root = _shapes(tmp_path / "shapes")
    counted = {"images": 0}
    real = arch_mod.TransferNet.features

    def counting(self, x):
        counted["images"] += len(x)
        return real(self, x)

    monkeypatch.setattr(arch_mod.TransferNet, "features", counting)
    run = train(f"folder:{root}", arch="effnet-lite0", freeze=True, epochs=15, batch_size=16, lr=1e-2,
                out=str(tmp_path / "run"), progress=False)
    n_train_val = run.config["split"]["train"] + run.config["split"]["val"]
    assert counted["images"] == n_train_val  # features computed once, not per epoch
    assert run.metrics["accuracy"] == 1.0 and all(r["phase"] == "head" for r in run.history)
    lm = Run.load(run.path).model()
    assert lm.config.input_size == (1, 32, 32)
    with pytest.raises(SpecError, match="freeze needs a pretrained backbone") as info:
        train("digits", arch="conv4-gap", freeze=True, progress=False)
    assert info.value.param == "freeze"


# -- bad runs -------------------------------------------------------------------------------

def test_not_a_run_directory(tmp_path):
    from convlens.models import load_model

    with pytest.raises(RunError, match="no such run directory"):
        evaluate(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a convlens run"):
        evaluate(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{\"format\": \"convlens-run\", \"arch\": {}, \"class_names\": [], "
                                     "\"input_size\": []}")
    with pytest.raises(ConvlensError, match="no weights.safetensors"):
        load_model(str(bad))
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConvlensError, match="not readable JSON"):
        load_model(str(bad))


def test_weights_that_do_not_fit_are_refused(digits_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run.path, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["arch"]["spec"] = "conv8-gap"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="weights do not fit the run's arch"):
        Run.load(copy)


# -- arrays in, resized copies, freezing up to a layer --------------------------------------

def _digit_arrays():
    from convlens.data import load_source

    d = load_source("digits")
    return d.images[:, 0].numpy().astype(np.float32) / 255.0, d.labels.numpy()  # as a notebook has them


def test_train_on_arrays_and_evaluate_again(tmp_path):
    x, y = _digit_arrays()
    names = [f"digit {i}" for i in range(10)]
    run = train((x, y), class_names=names, arch="conv8-pool-fc32", epochs=2, batch_size=64, progress=False)
    assert run.class_names == names and run.config["data"]["kind"] == "arrays" and run.config["input_size"] == [1, 8, 8]
    ev = evaluate(run, cams=False)  # in memory, never saved
    assert ev.accuracy == pytest.approx(run.metrics["accuracy"]) and ev.metrics["n_test"] == 359
    saved = run.save(tmp_path / "arrays")
    assert (tmp_path / "arrays" / "data.safetensors").is_file() and saved.first("data").name == "data.safetensors"
    again = evaluate(str(tmp_path / "arrays"), top_n=2)  # from the directory: the arrays are read back
    assert again.accuracy == pytest.approx(run.metrics["accuracy"]) and again.top_heatmaps.shape[:2] == (2, 2)
    # a loaded run saved elsewhere keeps its arrays
    Run.load(tmp_path / "arrays").save(tmp_path / "copy")
    assert evaluate(str(tmp_path / "copy"), cams=False).accuracy == pytest.approx(run.metrics["accuracy"])
    (tmp_path / "copy" / "data.safetensors").unlink()
    with pytest.raises(RunError, match="trained on arrays but holds no data.safetensors"):
        evaluate(str(tmp_path / "copy"))


def test_train_on_arrays_with_their_own_test_split():
    x, y = _digit_arrays()
    run = train(((x[:1500], y[:1500]), (x[1500:], y[1500:])), arch="fc16", epochs=1, progress=False)
    assert run.metrics["n_test"] == 297 and run.config["split"]["given_test"]
    assert evaluate(run, cams=False).metrics["n_test"] == 297


def test_bad_arrays_fail_before_training():
    x, y = _digit_arrays()
    with pytest.raises(ConvlensError, match="1797 images but labels of shape 10") as e:
        train((x, y[:10]), epochs=1, progress=False)
    assert e.value.param == "data"
    with pytest.raises(ConvlensError, match=r"images of shape 1797x64"):
        train((x.reshape(len(x), -1), y), epochs=1, progress=False)


def test_size_trains_on_resized_copies_and_the_run_rereads_them(tmp_path):
    run = train("digits", arch="conv8-pool-fc16", size="12x16", epochs=1, batch_size=64, progress=False,
                out=str(tmp_path / "r"))
    assert run.config["input_size"] == [1, 16, 12] and run.config["data"]["size"] == [16, 12]
    ds, _ = Run.load(tmp_path / "r").dataset()
    assert ds.images.shape[-2:] == (16, 12)
    assert evaluate(str(tmp_path / "r"), cams=False).accuracy == pytest.approx(run.metrics["accuracy"])
    with pytest.raises(ConvlensError, match="size '16y12': want WxH") as e:
        train("digits", size="16y12", progress=False)
    assert e.value.param == "size"


def test_freeze_until_keeps_the_first_layers_as_they_were(tmp_path):
    spec = "conv8-bn-pool-conv16-bn-pool-fc32"
    run = train("digits", arch=spec, freeze_until="features.conv1", epochs=2, batch_size=64, progress=False,
                out=str(tmp_path / "f"))
    # the seed makes the initial weights reproducible: rebuild them as train did
    from lightning_fabric.utilities.seed import seed_everything

    seed_everything(0, verbose=False)
    init = build_arch(spec, (1, 8, 8), 10, mean=run.config["normalization"]["mean"],
                      std=run.config["normalization"]["std"])
    trained = dict(run.module.named_parameters())
    for name, p in init.named_parameters():
        if name.startswith("features.conv1."):
            assert torch.equal(trained[name], p), name  # frozen: untouched
            assert not trained[name].requires_grad
    assert not torch.equal(trained["features.conv2.conv.weight"],
                           dict(init.named_parameters())["features.conv2.conv.weight"])
    bn = dict(run.module.named_modules())["features.conv1.bn"]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # a frozen bn keeps its statistics
    frozen = sum(p.numel() for n, p in init.named_parameters() if n.startswith("features.conv1."))
    total = sum(p.numel() for p in init.parameters())
    assert run.config["result"]["params"] == {"total": total, "trainable": total - frozen}
    assert run.config["train"]["freeze_until"] == "features.conv1"
    loaded = Run.load(tmp_path / "f")  # frozen again when read: the layer table counts them
    table = loaded.model().layers()
    assert table.non_trainable_params == frozen and "features.conv1" in table.frozen
    assert evaluate(loaded, top_n=2).top_heatmaps is not None  # CAMs still work through frozen layers


@pytest.mark.parametrize("kwargs, message", [
    ({"freeze_until": "features.conv9"}, r"freeze_until 'features.conv9': no such layer; did you mean"),
    ({"freeze_until": "head.classifier"}, "would freeze every layer"),
    ({"freeze_until": 3}, "must be a layer name"),
])
def test_bad_freeze_until_names_the_closest_layers(kwargs, message):
    with pytest.raises(SpecError, match=message) as e:
        train("digits", arch="conv8-pool-conv16-pool-fc32", epochs=1, progress=False, **kwargs)
    assert e.value.param == "freeze_until" and "\n" not in str(e.value)


def test_a_run_that_learned_nothing_says_what_to_change(tmp_path):
    """The fungi lesson's trap: a net that settles on one class.  An absurd learning rate on
    digits does it in two epochs; the run's log, metrics.json and config.json carry the hint, and
    a run that learned carries none."""
    from io import StringIO

    from rich.console import Console

    from convlens.train.fit import chance_hint

    log = StringIO()
    run = train("digits", arch="fc32", epochs=2, lr=50.0, schedule="constant", seed=0, out=str(tmp_path / "r"),
                console=Console(file=log, width=400))
    hint = run.metrics.get("hint")
    assert hint and "learned nothing" in hint and "--lr 17" in hint, run.metrics
    assert "hint:" in log.getvalue() and "learned nothing" in log.getvalue()
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["hint"] == hint
    assert Run.load(tmp_path / "r").config["result"]["hint"] == hint

    good = train("digits", arch="fc32", epochs=2, seed=0, progress=False)
    assert "hint" not in good.metrics and good.metrics["accuracy"] > 0.5

    # the rule itself: chance is the largest class's share of the validation split
    y = torch.tensor([0] * 60 + [1] * 40)
    rows = [{"val_accuracy": 0.61}]
    at_chance = chance_hint(rows, y, 2, lr=3e-3, input_size=(3, 224, 224), epochs=3)
    assert "0.600" in at_chance and "--size 64x64" in at_chance and "--epochs 10" in at_chance
    assert chance_hint([{"val_accuracy": 0.7}], y, 2, lr=3e-3, input_size=(3, 224, 224), epochs=3) is None
    assert "--size" not in chance_hint(rows, y, 2, lr=3e-3, input_size=(1, 28, 28), epochs=3)
    assert "above 0" in chance_hint(rows, y, 2, lr=0.0, input_size=(1, 28, 28), epochs=3)
    assert chance_hint([{"val_accuracy": None}], y, 2, lr=3e-3, input_size=(1, 8, 8), epochs=1) is None
    # the epoch the run keeps decides, not the best of all epochs
    kept = [{"val_accuracy": 0.60}, {"val_accuracy": 0.85}]
    assert "kept epoch's (1)" in chance_hint(kept, y, 2, lr=3e-3, input_size=(1, 8, 8), epochs=2, best_epoch=1)
    assert chance_hint(kept, y, 2, lr=3e-3, input_size=(1, 8, 8), epochs=2, best_epoch=2) is None
