"""Dataset examples and activation maximization on a model the train capability made."""

from __future__ import annotations

import json

import pytest

from convlens.cli import main


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from convlens.train import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train("digits", arch="conv8-pool-conv16-pool-fc32", epochs=2, out=str(out), progress=False)
    return out


def test_examples_from_a_runs_own_data(digits_run):
    from convlens.lens.examples import dataset_examples
    from convlens.models import load_model

    lm = load_model(str(digits_run))
    ex = dataset_examples(lm, lm.stage_layers()[0], "0-1", str(digits_run), n=3)
    assert len(ex.names) == 1797  # every image of scikit-learn's digits
    assert all(name.startswith("digits:") for name in ex.names)
    top = ex.scores[0]
    assert top.shape[0] == 3 and bool((top[:-1] >= top[1:]).all())  # best first


def test_visualize_cli_on_a_run_with_its_examples(digits_run, tmp_path, capsys):
    out = tmp_path / "vis"
    code = main(["visualize", "--model", str(digits_run), "--channels", "0-1", "--steps", "4",
                 "--examples", str(digits_run), "--top", "2", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads(captured.out)
    assert [r["channel"] for r in rows] == [0, 1]
    assert all("examples" in r for r in rows)
