"""The CLI contract for predict/layers/journey: JSON purity, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import convlens
from convlens.cli import app, flag_names, main
from convlens.errors import ConvlensError, SpecError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_model(builtin_model, monkeypatch):
    """Let predict/layers reuse the session's built-in model instead of loading it again."""
    import convlens.cli.cmd_layers as cmd_layers
    import convlens.cli.cmd_predict as cmd_predict

    real = cmd_predict.load

    def load(model, weights=None, device="cpu"):
        if model == "effnet-lite0" and weights is None and device == "cpu":
            return builtin_model
        return real(model, weights, device)

    monkeypatch.setattr(cmd_predict, "load", load)
    monkeypatch.setattr(cmd_layers, "load", load)
    return builtin_model


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("convlens: error:") and "Traceback" not in err
    return lines[0]


def test_help_lists_the_foundation_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("predict", "layers", "journey", "demo"):
        assert cmd in out
    assert main([]) == 0  # no arguments: help, not a crash
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    assert {"predict", "layers", "journey", "demo"} <= names


@pytest.mark.parametrize("argv,words", [
    (["frobnicate"], "frobnicate"),
    (["predict"], "Missing argument"),
    (["predict", "x.png", "--top-k", "many"], "--top-k"),
    (["layers", "--no-such-option"], "--no-such-option"),
    (["journey", "x.png"], "--out"),
])
def test_usage_errors_exit_2_in_one_line(capsys, argv, words):
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert words in _one_error_line(cap.err)


def test_predict_human_output(cli_model, sample_photos, capsys):
    assert main(["predict", str(sample_photos["coffee"]), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "espresso" in out and "967" in out and "%" in out
    assert out.count("\n") < 20


def test_predict_directory_and_mixed_failure(cli_model, sample_photos, tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_photos["coffee"], folder / "b_coffee.png")
    Image.open(sample_photos["chelsea"]).convert("RGB").save(folder / "sub" / "a_cat.jpg", quality=92)
    (folder / "notes.txt").write_text("not an image, skipped by suffix")
    assert main(["predict", str(folder), "--json", "-k", "1", "--batch-size", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [Path(r["image"]).name for r in result] == ["b_coffee.png", "a_cat.jpg"]
    assert result[0]["predictions"][0]["index"] == 967 and 281 <= result[1]["predictions"][0]["index"] <= 285

    # one bad file among good ones: exit 2, nothing half-printed on stdout
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["predict", str(folder / "b_coffee.png"), str(bad), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "broken.png" in _one_error_line(cap.err)


@pytest.mark.parametrize("argv,words", [
    (["--batch-size", "0"], "--batch-size"),
    (["--top-k", "-3"], "--top-k"),
    (["--device", "cuda:0"], "--device"),
    (["--model", "timm:resnet181"], "did you mean"),
    (["--model", "timm:resnet18", "--weights", "/no/such/weights.safetensors"], "weights file not found"),
])
def test_predict_bad_options(sample_photos, capsys, argv, words):
    if "cuda" in argv[-1]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    assert main(["predict", str(sample_photos["chelsea"]), "--json", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and words in _one_error_line(cap.err)


def test_library_errors_name_the_parameter_and_the_cli_prints_its_flag(cli_model, sample_photos, capsys):
    """The library says ``top_k`` (its parameter); the CLI prints the flag the user typed."""
    with pytest.raises(ConvlensError) as info:
        cli_model.predict([sample_photos["coffee"]], top_k=0)
    assert info.value.param == "top_k" and "top_k" in str(info.value) and "--" not in str(info.value)
    assert main(["predict", str(sample_photos["coffee"]), "--top-k", "0", "--json"]) == 2
    cap = capsys.readouterr()
    line = _one_error_line(cap.err)
    assert cap.out == "" and "--top-k must be at least 1 (got 0)" in line and " top_k" not in line


def test_flag_names_follow_the_invoked_command():
    names = flag_names(["predict", "x.png", "-k", "3"])
    assert names["top_k"] == "--top-k" and names["batch_size"] == "--batch-size"
    assert names["as_json"] == "--json" and names["images"] == "IMAGES"
    assert flag_names(["serve"])["max_upload_mb"] == "--max-upload-mb"
    assert "top_k" not in flag_names(["frobnicate"]) and "top_k" not in flag_names([])
    # whole words only: a parameter inside another word or flag stays as it is
    err = SpecError("top_k must be at least 1; top_k_max and --top_k stay", param="top_k")
    assert err.renamed(names) == "--top-k must be at least 1; top_k_max and --top_k stay"


def test_layers_json_is_pure_and_matches_api(cli_model, capsys):
    assert main(["layers", "--json"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert rows == cli_model.layers().to_list()
    assert convlens.layers(cli_model) is cli_model.layers()


def test_python_api_exports(builtin_model, sample_photos):
    assert convlens.load_model(builtin_model) is builtin_model
    preds = convlens.predict(sample_photos["coffee"], model=builtin_model, top_k=1)
    assert preds[0].top.index == 967 and preds[0].to_dict()["predictions"][0]["label"] == "espresso"
    assert "espresso" in str(preds[0])
    assert convlens.load_image(sample_photos["coffee"]).mode == "RGB"
    assert issubclass(convlens.Probe, object) and convlens.ConvlensError.exit_code == 2
    with pytest.raises(AttributeError):
        convlens.no_such_name  # noqa: B018


def test_console_script_end_to_end(tmp_path):
    """The installed `convlens` entry point: a missing file is one stderr line and exit 2."""
    exe = Path(sys.executable).with_name("convlens")
    if not exe.exists():
        pytest.skip(f"console script {exe} not installed")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(exe), "predict", str(tmp_path / "missing.png"), "--json"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    line = _one_error_line(proc.stderr)
    assert "missing.png" in line and "no such file" in line
