"""Issue 30 item 8: `convlens train` with its defaults is good on small data sets.

The rule (convlens.train.defaults): without --augment, a CNN trained from scratch on under 1,000
training images gets a light random affine (no flips); larger splits and pretrained backbones train
as they always did. The measured accuracies, three seeds, are in bench/RESULTS.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main
from convlens.train import train
from convlens.train.defaults import SMALL_DATA_AUGMENT, SMALL_SPLIT, default_augment, describe, is_auto

TINY = "conv4-bn-pool-gap"


def test_the_rule_augments_small_from_scratch_splits_only():
    assert default_augment(437, "spec") == SMALL_DATA_AUGMENT  # the CMU faces' training split
    assert default_augment(SMALL_SPLIT - 1, "spec") == SMALL_DATA_AUGMENT
    assert default_augment(SMALL_SPLIT, "spec") == ""
    assert default_augment(1258, "spec") == ""  # digits
    assert default_augment(1121, "spec") == ""  # DeFungi
    assert default_augment(437, "transfer") == ""  # a frozen backbone computes its features once
    assert "flip" not in SMALL_DATA_AUGMENT  # digits and text must not be mirrored
    assert is_auto("auto") and is_auto(" AUTO ") and not is_auto(None) and not is_auto("rotate=5")
    assert "437" in describe(437, "spec") and "--augment none" in describe(437, "spec")
    assert describe(1258, "spec") == ""


def test_the_cli_states_the_rule_it_applies():
    from convlens.cli import cmd_train

    assert (cmd_train.SMALL_DATA_AUGMENT, cmd_train.SMALL_SPLIT) == (SMALL_DATA_AUGMENT, SMALL_SPLIT)


def test_auto_leaves_a_large_split_as_it_was():
    """digits (1,258 training images): auto trains to the same weights as no augmentation."""
    kw = dict(arch=TINY, epochs=1, batch_size=64, seed=0, progress=False)
    a, b = train("digits", augment="auto", **kw), train("digits", **kw)
    assert a.config["train"]["augment"] == b.config["train"]["augment"] == ""
    for k, v in a.module.state_dict().items():
        assert v.equal(b.module.state_dict()[k]), k


def _small_folder(root):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            px = rng.integers(0, 100, (16, 16)) + 120 * c
            Image.fromarray(px.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_cli_without_augment_augments_a_small_set_and_says_so(tmp_path, capsys):
    data = _small_folder(tmp_path / "data")
    code = main(["train", "--data", f"folder:{data}", "--arch", TINY, "--epochs", "1", "--out", str(tmp_path / "a"),
                 "--json"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["augment"] == SMALL_DATA_AUGMENT
    assert f"augment: {SMALL_DATA_AUGMENT} (the default" in err and "--augment none turns it off" in err
    code = main(["train", "--data", f"folder:{data}", "--arch", TINY, "--epochs", "1", "--augment", "none",
                 "--out", str(tmp_path / "b"), "--json"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["augment"] == ""
    assert "augment:" not in err


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("label,floor", [("eyes", 0.99), ("identity", 0.98)])
def test_cli_defaults_on_cmu_faces(tmp_path, capsys, data_dir, label, floor):
    """`convlens train --data cmu-faces:... --label LABEL` with nothing else (seed 0)."""
    code = main(["train", "--data", f"cmu-faces:{data_dir / 'cmu_faces'}", "--label", label,
                 "--out", str(tmp_path / label), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    metrics = json.loads(out.out)["metrics"]
    assert metrics["n_test"] == 125 and metrics["accuracy"] >= floor, metrics
