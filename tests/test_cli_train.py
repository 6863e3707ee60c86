"""The train / evaluate / augment-preview commands, and predict/explain on a trained run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from convlens.cli import main

ARCH = "conv8-bn-pool-conv16-bn-pool-fc32"


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One run trained through the CLI (in process), with its --json output."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("cli") / "run"
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        code = main(["train", "--data", "digits", "--arch", ARCH, "--epochs", "3", "--batch-size", "64",
                     "--augment", "rotate=5", "--preview", "--out", str(out), "--json"])
    return out, code, buf.getvalue(), err.getvalue()


def test_train_json_prints_metrics_and_run_path_only(cli_run):
    out, code, stdout, stderr = cli_run
    assert code == 0
    doc = json.loads(stdout)  # stdout is pure JSON
    assert doc["run"] == str(out) and doc["metrics"]["accuracy"] > 0.8 and doc["metrics"]["n_test"] == 359
    assert "train 1/3" in stderr and "1797 images" in stderr  # progress went to stderr
    assert (out / "augment_preview.png").is_file() and (out / "weights.safetensors").is_file()


def test_evaluate_json_and_pictures(cli_run, tmp_path, capsys):
    out = cli_run[0]
    code, stdout, _ = run_cli(["evaluate", out, "--json", "--out", tmp_path / "ev", "--top", "4"], capsys)
    assert code == 0
    doc = json.loads(stdout)
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion", "n_test"} <= set(doc)
    assert doc["accuracy"] == json.loads((out / "metrics.json").read_text())["accuracy"]
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {"metrics.json", "confusion.png", "top_losses.png",
                                                           "top_losses_heatmaps.npy"}
    code, stdout, _ = run_cli(["evaluate", out], capsys)
    assert code == 0 and "balanced accuracy" in stdout and "precision" in stdout


def test_predict_and_explain_work_on_a_trained_run(cli_run, tmp_path, capsys):
    from convlens.data import load_source

    out = cli_run[0]
    ds = load_source("digits")
    splits = json.loads((out / "splits.json").read_text())
    files = []
    for k, item in enumerate(splits["test"][:6]):
        i = ds.ids.index(item)
        p = tmp_path / f"digit{k}_{int(ds.labels[i])}.png"
        Image.fromarray(ds.images[i, 0].numpy()).save(p)
        files.append(p)
    code, stdout, _ = run_cli(["predict", *files, "--model", out, "--json", "--top-k", "1"], capsys)
    assert code == 0
    preds = json.loads(stdout)
    hits = sum(Path(r["image"]).stem.split("_")[1] == r["predictions"][0]["label"] for r in preds)
    assert hits >= 4
    code, stdout, err = run_cli(["explain", files[0], "--model", out, "--json", "--out", tmp_path / "ex"], capsys)
    assert code == 0, err
    assert json.loads(stdout)


def test_augment_preview_command(tmp_path, capsys, sample_photos):
    code, stdout, _ = run_cli(["augment-preview", sample_photos["coffee"], "--augment", "rotate=20,flip=h",
                               "--out", tmp_path, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["preview"].endswith("augment_preview.png")
    img = Image.open(tmp_path / "augment_preview.png")
    assert img.width >= 480 and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "digits", "--arch", "conv32-pol", "--out", "{tmp}/r"], "unknown token 'pol'"),
    (["train", "--data", "digits", "--augment", "spin=3", "--out", "{tmp}/r"], "unknown token 'spin=3'"),
    (["train", "--data", "folder:{tmp}/nothing", "--out", "{tmp}/r"], "no such folder"),
    (["train", "--data", "digits", "--label", "eyes", "--out", "{tmp}/r"],
     "--label 'eyes': only cmu-faces sources take one"),
    (["train", "--data", "digits", "--stop-at", "accuracy", "--out", "{tmp}/r"], "must look like accuracy=0.99"),
    (["evaluate", "{tmp}"], "not a convlens run"),
    (["evaluate", "{tmp}", "--top", "-1"], "--top must be at least 0"),
    (["train", "--data", "digits", "--epochs", "-1", "--out", "{tmp}/r"], "--epochs must be at least 1"),
    (["train", "--data", "digits", "--freeze", "--out", "{tmp}/r"], "--freeze needs a pretrained backbone"),
    (["train", "--out", "{tmp}/r"], "--data is needed (a source such as digits or folder:PATH), or --resume RUN"),
    (["train", "--data", "digits"], "--out is needed"),
    (["augment-preview", "{tmp}/none.png", "--augment", "rotate=3", "--out", "{tmp}/p"], "no such file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "p").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_run_refused_with_exit_2(cli_run, capsys):
    code, _, err = run_cli(["train", "--data", "digits", "--out", cli_run[0]], capsys)
    assert code == 2 and "already exists" in err and "--force" in err


def test_cli_default_arch_is_the_library_default():
    from convlens.cli.cmd_train import DEFAULT_ARCH as CLI_DEFAULT
    from convlens.models.arch import DEFAULT_ARCH

    assert CLI_DEFAULT == DEFAULT_ARCH


def test_help_does_not_import_torch():
    code = ("import sys; from convlens.cli import app; "
            "assert 'convlens.train' not in sys.modules and 'lightning_fabric' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "digits", "--epochs", "2", "--epochs", "3", "--out", "{tmp}/r"],
     "--epochs given twice (--epochs 2, --epochs 3): it takes one value"),
    (["train", "--data=digits", "--data", "digits", "--out", "{tmp}/r"], "--data given twice"),
    (["train", "--data", "digits", "-o", "{tmp}/r", "--out", "{tmp}/r"], "--out given twice"),
    (["evaluate", "{tmp}", "--cams", "--no-cams"], "--cams given twice (--cams, --no-cams)"),
    (["explain", "{tmp}/x.png", "-m", "a", "--model", "b", "--json", "--json"], "--model given twice"),
    (["compare", "{tmp}/a", "{tmp}/b", "--top", "1", "--top", "2"], "--top given twice"),
])
def test_a_repeated_single_valued_option_is_an_error(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_repeatable_options_and_option_like_values_pass_the_repeat_check(tmp_path, capsys):
    from convlens.cli import repeated_option

    assert repeated_option(["kernels", "x.png", "--kernel", "sharpen", "--kernel", "emboss"]) is None
    assert repeated_option(["train", "--data", "digits", "--lr", "--lr"]) is None  # "--lr" is the value
    assert repeated_option(["train", "--data", "digits", "--", "--data"]) is None
    code, _, err = run_cli(["kernels", tmp_path / "none.png", "--kernel", "sharpen", "--kernel", "emboss"], capsys)
    assert code == 2 and "no such file" in err and "given twice" not in err


def test_train_size_and_freeze_until_flags(tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, err = run_cli(["train", "--data", "digits", "--arch", "conv8-bn-pool-conv16-pool-fc16",
                                 "--epochs", "1", "--size", "12x12", "--freeze-until", "features.conv1", "--out", out,
                                 "--json"], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["input_size"] == [1, 12, 12] and cfg["train"]["freeze_until"] == "features.conv1"
    assert cfg["result"]["params"]["trainable"] < cfg["result"]["params"]["total"]
    code, stdout, err = run_cli(["layers", "--model", out], capsys)
    assert code == 0 and "non-trainable 88" in stdout and "Frozen: features.conv1" in stdout  # conv 8*9+8, bn 8+8


@pytest.mark.parametrize("args, message", [
    (["--freeze-until", "features.conv9"],
     "--freeze-until 'features.conv9': no such layer; did you mean: features.conv2, features.conv1"),
    (["--freeze-until", "head.classifier"], "--freeze-until 'head.classifier': would freeze every layer"),
    (["--size", "12by12"], "--size '12by12': want WxH"),
])
def test_bad_size_and_freeze_until_are_one_line(tmp_path, capsys, args, message):
    code, stdout, err = run_cli(["train", "--data", "digits", "--arch", "conv8-pool-conv16-pool-fc16", "--epochs", "1",
                                 *args, "--out", tmp_path / "r"], capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()
