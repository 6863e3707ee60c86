"""The one validation layer (convlens/options.py): declared option sets and file schemas with bounds;
every refusal is one ConvlensError line naming the parameter (or the file and the field), never a
pydantic ValidationError."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from convlens import options as o
from convlens.errors import ConvlensError, ModelError, RunError, SpecError

HOSTILE_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e39, -1e308, 10**400, "0.5", True, None]
HOSTILE_INTS = [0, -1, 10**30, 2.0, "3", True, float("nan"), None]


def _refused(model, field, value):
    with pytest.raises(SpecError) as info:
        o.check_options(model, **{field: value})
    assert not isinstance(info.value, ValidationError)
    msg = str(info.value)
    assert info.value.param == field and msg.startswith(field) and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("model, field", [
    (o.ScoreOptions, "tolerance"), (o.ExplainOptions, "alpha"), (o.VisualizeOptions, "lr"),
    (o.VisualizeOptions, "tv"), (o.VisualizeOptions, "l2"), (o.TrainOptions, "lr"),
    (o.TrainOptions, "weight_decay"), (o.TrainOptions, "val"), (o.TrainOptions, "test"),
])
@pytest.mark.parametrize("value", HOSTILE_FLOATS, ids=repr)
def test_every_float_option_refuses_non_finite_and_overflowing_numbers(model, field, value):
    if value is None and model.model_fields[field].default is None:
        return  # an optional number may be left out
    _refused(model, field, value)


@pytest.mark.parametrize("model, field", [
    (o.KernelOptions, "stride"), (o.KernelOptions, "repeat"), (o.KernelOptions, "pool_size"),
    (o.ScoreOptions, "steps"), (o.ScoreOptions, "batch_size"), (o.ExplainOptions, "batch_size"),
    (o.VisualizeOptions, "steps"), (o.VisualizeOptions, "batch_size"), (o.VisualizeOptions, "top"),
    (o.AuditOptions, "top_k"), (o.AuditOptions, "shard_size"), (o.TrainOptions, "epochs"),
    (o.TrainOptions, "batch_size"),
])
@pytest.mark.parametrize("value", HOSTILE_INTS, ids=repr)
def test_every_count_option_refuses_zero_huge_fractional_and_bool(model, field, value):
    if value is None and model.model_fields[field].default is None:
        return
    _refused(model, field, value)


def test_bounds_are_inclusive_and_named():
    assert o.check_options(o.KernelOptions, repeat=o.MAX_REPEAT, padding=str(o.MAX_PADDING)).padding == o.MAX_PADDING
    assert "up to 16" in _refused(o.KernelOptions, "repeat", o.MAX_REPEAT + 1)
    assert "up to 1024" in _refused(o.KernelOptions, "padding", o.MAX_PADDING + 1)
    assert o.check_options(o.ScoreOptions, steps=1).steps == 1 and o.check_options(o.ScoreOptions, steps=1000).steps
    assert "up to 1000" in _refused(o.ScoreOptions, "steps", 1001)
    assert o.check_options(o.KernelOptions, stride=np.int64(2)).stride == 2  # NumPy ints are whole numbers


def test_option_sets_normalise_and_forbid_unknown_names():
    k = o.check_options(o.KernelOptions, color="Grey", padding=" SAME ", pool="average")
    assert (k.color, k.padding, k.pool) == ("gray", "same", "avg")
    with pytest.raises(SpecError, match="paddding") as info:
        o.check_options(o.KernelOptions, paddding=3)
    assert info.value.param == "paddding"
    with pytest.raises(SpecError, match="val \\+ test"):
        o.check_options(o.TrainOptions, val=0.5, test=0.5)


def test_every_bound_is_documented_in_the_module():
    bounds = [name for name in dir(o) if name.startswith("MAX_") and name != "MAX_SEED"]
    assert len(bounds) >= 10
    for name in bounds:
        assert f":data:`{name}`" in o.__doc__, f"{name} has no line in the module doc (its worst case)"


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
    ('{"a": ' * 65 + "1" + "}" * 65, "nested deeper than 64"),
    ("[NaN]", "not a finite number"),
    ("[-Infinity]", "not a finite number"),
    ("[1e39]", "overflows float32"),
    ("[1e400]", "overflows float32"),
    ("[" + "9" * 5000 + "]", "not readable JSON"),
    ("{", "not readable JSON"),
])
def test_parse_json_refuses_deep_and_non_finite_in_one_line(text, words):
    with pytest.raises(RunError) as info:
        o.parse_json(text, "runs/x/config.json", RunError)
    msg = str(info.value)
    assert msg.startswith("runs/x/config.json: ") and words in msg and "\n" not in msg


def test_parse_json_keeps_sound_documents():
    doc = {"a": [1, 2.5, -3e38, {"b": None, "c": "x"}], "d": True}
    assert o.parse_json(json.dumps(doc), "f") == doc
    assert o.parse_json("[" * 60 + "]" * 60, "f") is not None


def test_read_json_refuses_a_file_over_the_size_bound(tmp_path, monkeypatch):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"x": "y" * 200}))
    monkeypatch.setattr(o, "MAX_JSON_BYTES", 100)
    with pytest.raises(ModelError, match="too large"):
        o.read_json(p, ModelError)
    (tmp_path / "bad.json").write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ModelError, match="bad.json: not readable JSON"):
        o.read_json(tmp_path / "bad.json", ModelError)


@pytest.mark.parametrize("change, field", [
    ({"std": [0, 1, 1]}, "std"),
    ({"std": [-1]}, "std"),
    ({"mean": [math.inf, 0, 0]}, "mean"),
    ({"crop_pct": -1}, "crop_pct"),
    ({"crop_pct": 0}, "crop_pct"),
    ({"crop_pct": 1.5}, "crop_pct"),
    ({"input_size": "224"}, "input_size"),
    ({"input_size": [3, 224]}, "input_size"),
    ({"input_size": [3, 30000, 30000]}, "input_size"),
    ({"input_size": [0, 224, 224]}, "input_size"),
    ({"input_size": [3, 224.0, 224]}, "input_size.1"),
    ({"mean": [0.5, 0.5]}, "mean needs one value per channel"),
    ({"interpolation": "magic"}, "interpolation"),
])
def test_preprocess_config_names_the_file_and_field(change, field):
    base = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
            "crop_pct": 0.875, "crop_mode": "center"}
    assert o.check_file("ck.json", base, o.PreprocessConfig, ModelError).input_size == [3, 224, 224]
    with pytest.raises(ModelError) as info:
        o.check_file("ck.json", {**base, **change}, o.PreprocessConfig, ModelError)
    msg = str(info.value)
    assert msg.startswith("ck.json: ") and field in msg and "\n" not in msg and "got a dict" not in msg, msg


def test_preprocess_itself_refuses_what_the_schema_refuses():
    from convlens.models.preprocess import Preprocess

    for kwargs in ({"std": (0.0, 1.0, 1.0)}, {"crop_pct": -1.0}, {"input_size": (3, 30000, 30000)},
                   {"input_size": "224"}, {"mean": (math.nan,) * 3}):
        with pytest.raises(SpecError) as info:
            Preprocess(**kwargs)
        assert info.value.param == "preprocess" and "\n" not in str(info.value)
    assert Preprocess(input_size=(1, 28, 28), mean=(0.1,), std=(0.3,)).std == (0.3,)


def test_audit_state_schema():
    ok = {"format": "convlens-audit", "state": "running", "model": "m", "data": "folder:x", "items": 10,
          "method": "gradcam", "layer": "conv", "target": "label", "top_k": 5, "shard_size": 512, "map_size": 64,
          "shards": 1, "class_names": ["a", "b"]}
    assert o.check_file("audit.json", ok, o.AuditState, SpecError).state == "running"
    for change, field in (({"state": "bogus"}, "state"), ({"top_k": 10**9}, "top_k"), ({"items": -1}, "items"),
                          ({"class_names": []}, "class_names")):
        with pytest.raises(SpecError, match=f"audit.json: field '{field}'"):
            o.check_file("audit.json", {**ok, **change}, o.AuditState, SpecError)


def test_run_files_keep_their_old_import_names():
    from convlens.models import run

    assert run.RunConfig is o.RunConfig and run.HistoryRow is o.HistoryRow
    with pytest.raises(RunError, match="metrics.json: field 'accuracy'"):
        run.check_schema("metrics.json", {"accuracy": float("nan")}, o.RunMetrics)


def test_errors_are_convlens_errors_never_validation_errors():
    for call in (lambda: o.check_options(o.KernelOptions, stride="x"),
                 lambda: o.check_file("f.json", [], o.RunConfig),
                 lambda: o.parse_json("[NaN]", "f")):
        with pytest.raises(ConvlensError) as info:
            call()
        assert not isinstance(info.value, ValidationError) and info.value.__cause__ is None


@pytest.mark.parametrize("args, words", [
    (["visualize", "--out", "{out}", "--steps", "100000"], "--steps must be a positive integer up to 1000"),
    (["visualize", "--out", "{out}", "--lr", "nan"], "--lr must be a finite number"),
    (["visualize", "--out", "{out}", "--lr", "1e39"], "--lr must lie within float32"),
    (["visualize", "--out", "{out}", "--tv", "-1"], "--tv must be >= 0"),
    (["visualize", "--out", "{out}", "--top", "0"], "--top must be a positive integer"),
    (["visualize", "--out", "{out}", "--batch-size", "99999"], "--batch-size"),
    (["explain", "{img}", "--alpha", "nan"], "--alpha must be a finite number"),
    (["explain", "{img}", "--alpha", "2"], "--alpha must be between 0 and 1"),
    (["explain", "{img}", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["kernels", "demo", "--kernel", "vertical", "--padding", "20000"], "--padding must be valid, same"),
    (["score", "{img}", "--steps", "5000"], "--steps must be a positive integer up to 1000"),
])
def test_cli_options_are_checked_by_the_schema_before_any_model(capsys, tmp_path, monkeypatch, args, words):
    from convlens.cli import cmd_explain, cmd_score, cmd_visualize, main

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded before the options were checked")

    for cmd in (cmd_explain, cmd_score, cmd_visualize):
        monkeypatch.setattr(cmd, "load", no_model)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    argv = [a.format(out=tmp_path / "out", img=img) for a in args]
    code = main(argv)
    cap = capsys.readouterr()
    assert code == 2 and cap.out == "", cap.err
    assert cap.err.count("\n") == 1 and words in cap.err, cap.err
    assert not (tmp_path / "out").exists()


def test_train_and_audit_go_through_their_declared_bounds(tmp_path):
    """train() and audit() check their numbers against TrainOptions / AuditOptions before any data is
    read: a request past a bound is one line naming the parameter, not hours of work."""
    import convlens as cl

    with pytest.raises(SpecError) as info:
        cl.train("digits", epochs=100_001, progress=False)
    assert info.value.param == "epochs" and "\n" not in str(info.value)
    with pytest.raises(SpecError) as info:
        cl.train("digits", batch_size=o.MAX_BATCH + 1, progress=False)
    assert info.value.param == "batch_size"
    with pytest.raises(SpecError) as info:
        cl.train("digits", epochs=0, progress=False)
    assert info.value.param == "epochs"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    lm = cl.load_model(net, input_size=(3, 16, 16), class_names=["a", "b"])
    folder = tmp_path / "data"
    for k in ("a", "b"):
        (folder / k).mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 0, 0) if k == "a" else (0, 0, 200)).save(folder / k / "x.png")
    with pytest.raises(SpecError) as info:
        cl.audit(lm, str(folder), shard_size=(1 << 20) + 1, out=str(tmp_path / "audit"))
    assert info.value.param == "shard_size"
    assert not (tmp_path / "audit").exists()
