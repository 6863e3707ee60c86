"""Files convlens reads back, edited by a hostile hand: one line naming the file and the field, found
before anything large is allocated; weights holding NaN or inf refused when the model loads."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main
from convlens.errors import ConvlensError, ModelError, RunError

#: no hostile file may cost more than this much Python-tracked memory before it is refused
PEAK_BYTES = 64 << 20


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small run directory written by Run.save (no training: a freshly built spec net)."""
    from convlens.models.arch import build_arch
    from convlens.models.run import Run

    cfg = {"format": "convlens-run", "version": 1, "arch": {"kind": "spec", "spec": "conv4-pool-gap"},
           "class_names": ["a", "b"], "input_size": [1, 12, 12],
           "normalization": {"mean": [0.5], "std": [0.25]}, "data": {"kind": "digits", "size": [12, 12]}}
    module = build_arch("conv4-pool-gap", (1, 12, 12), 2).eval()
    history = [{"phase": "train", "epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "lr": 0.01, "best": True}]
    out = tmp_path_factory.mktemp("hostile") / "run"
    Run(cfg, history, {"accuracy": 0.5, "n_test": 4}, module, {"train": ["#0"], "test": ["#1"]}).save(out)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _load_within_budget(path: Path, weights: bool = True, monkeypatch=None):
    """Run.load(path) under tracemalloc: (the error it raised, the peak of allocated bytes). With
    ``monkeypatch``, building the network fails the test: the refusal must come before it."""
    from convlens.models import run as run_mod
    from convlens.models.run import Run

    if monkeypatch is not None:
        def no_build(*_a, **_k):
            raise AssertionError("the network was built before the config was refused")
        monkeypatch.setattr(run_mod, "build_arch", no_build)
    tracemalloc.start()
    try:
        with pytest.raises(ConvlensError) as info:
            Run.load(path, weights=weights)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


def _config(run: Path, change) -> None:
    cfg = json.loads((run / "config.json").read_text())
    change(cfg)
    (run / "config.json").write_text(json.dumps(cfg))


CONFIGS = {
    "size 1e30 as a float": (lambda c: c.update(input_size=[1, 1e30, 12]), "field 'input_size.1'"),
    "size 10**30 as an int": (lambda c: c.update(input_size=[1, 10**30, 12]), "field 'input_size'"),
    "input 30000 px": (lambda c: c.update(input_size=[1, 30000, 30000]), "height and width must be from 1 to 4096"),
    "data size 1e30": (lambda c: c["data"].update(size=[1e30, 1e30]), "field 'data.size.0'"),
    "conv999999999": (lambda c: c["arch"].update(spec="conv999999999-gap"), "field 'arch.spec'"),
    "fc of a billion": (lambda c: c["arch"].update(spec="conv4-fc1000000000"), "field 'arch.spec'"),
    "too many parameters": (lambda c: c["arch"].update(spec="conv4096-conv4096-conv4096-gap"), "parameters"),
    "huge activations": (lambda c: c.update(input_size=[1, 4096, 4096]) or c["arch"].update(spec="conv1024-gap"),
                         "values per image"),
    "300 layers": (lambda c: c["arch"].update(spec="-".join(["conv4"] * 300) + "-gap"), "at most 256"),
    "std 0": (lambda c: c["normalization"].update(std=[0]), "field 'normalization.std'"),
    "a million classes": (lambda c: c.update(class_names=[str(i) for i in range(200_000)]), "field 'class_names'"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_hostile_run_config_one_line_before_any_allocation(run_dir, tmp_path, monkeypatch, case):
    change, words = CONFIGS[case]
    run = _copy(run_dir, tmp_path)
    _config(run, change)
    err, peak = _load_within_budget(run, monkeypatch=monkeypatch)
    msg = str(err)
    assert isinstance(err, RunError) and "\n" not in msg
    assert "config.json" in msg and words in msg, msg
    assert peak < PEAK_BYTES, f"{peak / 2**20:.0f} MiB allocated before the refusal"


@pytest.mark.parametrize("text, words", [
    ('{"format": "convlens-run", "train": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 64"),
    ('{"format": "convlens-run", "train": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}", "nested deeper than 64"),
    ('{"format": "convlens-run", "train": {"lr": 1e400}}', "overflows float32"),
    ('{"format": "convlens-run", "train": {"lr": NaN}}', "not a finite number"),
])
def test_deep_or_non_finite_config_json(run_dir, tmp_path, text, words):
    run = _copy(run_dir, tmp_path)
    (run / "config.json").write_text(text)
    err, peak = _load_within_budget(run, weights=False)
    assert isinstance(err, RunError) and "config.json" in str(err) and words in str(err), str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize("name, text, words", [
    ("metrics.json", '{"accuracy": NaN}', "metrics.json: not readable JSON"),
    ("metrics.json", '{"accuracy": 1e39}', "overflows float32"),
    ("metrics.json", '{"accuracy": "high"}', "field 'accuracy'"),
    ("splits.json", '{"train": [1, 2]}', "field 'train.0'"),
    ("history.csv", "phase,epoch,train_loss,lr\ntrain,1,0.5,nan\n", "line 2: field 'lr'"),
    ("history.csv", "phase,epoch,train_accuracy\ntrain,1,inf\n", "line 2: field 'train_accuracy'"),
    ("history.csv", "phase,epoch,train_loss\ntrain,1,1e39\n", "line 2: field 'train_loss'"),
    ("history.csv", "phase,epoch,train_loss\ntrain,-3,0.5\n", "line 2: field 'epoch'"),
])
def test_hostile_metrics_splits_history(run_dir, tmp_path, name, text, words):
    run = _copy(run_dir, tmp_path)
    (run / name).write_text(text)
    err, _ = _load_within_budget(run, weights=False)
    assert isinstance(err, RunError) and name in str(err) and words in str(err), str(err)


def _poison(path: Path, value: float = float("nan")) -> str:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    save_file(state, str(path))
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_run_with_nan_weights_is_refused_naming_the_tensor(run_dir, tmp_path, value):
    from convlens.models import load_model

    run = _copy(run_dir, tmp_path)
    name = _poison(run / "weights.safetensors", value)
    with pytest.raises(RunError) as info:
        load_model(str(run))
    msg = str(info.value)
    assert "weights.safetensors" in msg and repr(name) in msg and "NaN or infinite" in msg and "\n" not in msg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny timm checkpoint (random weights) saved by LensModel.save."""
    from convlens.models import load_model

    lm = load_model("timm:test_resnet", pretrained=False)
    return lm.save(tmp_path_factory.mktemp("ck") / "tiny")


def _ck_copy(checkpoint: Path, tmp_path: Path) -> Path:
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(checkpoint.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    return tmp_path / "tiny.safetensors"


def _meta(path: Path, change) -> None:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))


METAS = {
    "std 0": (lambda m: m["preprocess"].update(std=[0, 0, 0]), "field 'preprocess.std'"),
    "crop_pct -1": (lambda m: m["preprocess"].update(crop_pct=-1), "field 'preprocess.crop_pct'"),
    "a string size": (lambda m: m["preprocess"].update(input_size="224"), "field 'preprocess.input_size'"),
    "string sides": (lambda m: m["preprocess"].update(input_size=["3", "224", "224"]), "preprocess.input_size.0"),
    "30000 px": (lambda m: m["preprocess"].update(input_size=[3, 30000, 30000]), "field 'preprocess.input_size'"),
    "nan mean": (lambda m: m["preprocess"].update(mean=[float("nan")] * 3), "not a finite number"),
    "wrong class count": (lambda m: m.update(class_names=["a", "b", "c"]), "class_names"),
    "no source": (lambda m: m.pop("source"), "not a convlens checkpoint"),
}


@pytest.mark.parametrize("case", list(METAS))
def test_hostile_checkpoint_json(checkpoint, tmp_path, case):
    from convlens.models import load_model

    change, words = METAS[case]
    path = _ck_copy(checkpoint, tmp_path)
    _meta(path, change)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError) as info:
            load_model(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "tiny" in msg and words in msg and "\n" not in msg, msg
    assert peak < PEAK_BYTES


def test_checkpoint_and_weights_file_with_nan_are_refused(checkpoint, tmp_path):
    from convlens.models import load_model

    path = _ck_copy(checkpoint, tmp_path)
    name = _poison(path)
    with pytest.raises(ModelError, match=f"tensor '{name}' holds 1 NaN") as info:
        load_model(str(path))
    assert "tiny.safetensors" in str(info.value)
    with pytest.raises(ModelError, match=f"tensor '{name}'"):  # as weights=PATH too
        load_model("timm:test_resnet", weights=str(path), pretrained=False)


def test_predict_with_nan_weights_exits_2_in_one_line(checkpoint, tmp_path, capsys):
    path = _ck_copy(checkpoint, tmp_path)
    _poison(path)
    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(img)
    code = main(["predict", str(img), "--model", "timm:test_resnet", "--weights", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and "null" not in out and "NaN" not in out
    assert err.count("\n") == 1 and "NaN or infinite" in err and "Traceback" not in err


def test_a_sound_run_and_checkpoint_still_load(run_dir, checkpoint):
    from convlens.models import load_model

    lm = load_model(str(run_dir))
    assert lm.class_names == ["a", "b"]
    probs = lm.probabilities(torch.zeros(1, 1, 12, 12))
    assert torch.isfinite(probs).all()
    assert load_model(str(checkpoint)).config.input_size[0] == 3


def test_a_diverged_epoch_in_the_history_is_a_fact_not_an_error(run_dir, tmp_path):
    """Training writes a NaN loss for an epoch that diverged: the run still lists (its curves, its
    summary); only weights holding NaN are refused, when the model loads."""
    from convlens.models.run import Run

    run = _copy(run_dir, tmp_path)
    (run / "history.csv").write_text("phase,epoch,train_loss,val_loss\ntrain,1,nan,inf\n")
    loaded = Run.load(run, weights=False)
    assert math.isnan(loaded.history[0]["train_loss"]) and loaded.summary()["classes"] == 2
