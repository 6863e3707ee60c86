"""Data-parallel training (issue 32, items 1 and 4): ``convlens train --devices 2`` on CPU runs two
processes (gloo) that each train on their shard, print and write once, and reach the accuracy of one
process; what cannot run here is refused in one line before anything is read or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convlens.cli import main

ROOT = Path(__file__).resolve().parents[1]
ARCH = "conv16-bn-pool-conv32-bn-pool-fc64-drop0.1"
RECIPE = ["train", "--data", "digits", "--arch", ARCH, "--epochs", "8", "--seed", "3", "--json"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _run(program: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*program, *args], capture_output=True, text=True, env=_env(), timeout=600)


needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two processes need two usable cores")


@needs_two_cores
@pytest.mark.slow
def test_two_processes_print_once_write_once_and_match_one_process(tmp_path):
    """The acceptance test: the same seed, one process with batch 32 and two with batch 16 each (the same
    global batch, the rule the README states): one JSON document, one run folder, accuracy within 0.02."""
    one = _run([sys.executable, "-m", "convlens.cli"], *RECIPE, "--batch-size", "32", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    out = tmp_path / "two" / "run"
    two = _run([sys.executable, "-m", "convlens.cli"], *RECIPE, "--batch-size", "16", "--devices", "2",
               "--out", str(out))
    assert two.returncode == 0, two.stderr[-3000:]
    doc = json.loads(two.stdout)  # exactly one JSON document on stdout (a second would not parse)
    assert doc["run"] == str(out) and doc["metrics"]["n_test"] == 359
    single = json.loads(one.stdout)["metrics"]["accuracy"]
    assert abs(doc["metrics"]["accuracy"] - single) <= 0.02, (doc["metrics"]["accuracy"], single)
    err = two.stderr
    assert err.count("train 1/8") == 1 and err.count("train 8/8") == 1 and err.count("completed:") == 1, err
    assert err.count("data-parallel: 2 processes (cpu, 1 thread(s) each), batch 16 x 2") == 1
    assert "Initializing distributed" not in err and "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no second folder, no staging sibling left
    config = json.loads((out / "config.json").read_text())
    assert config["distributed"]["world_size"] == 2 and config["distributed"]["processes_per_node"] == 2
    assert config["distributed"]["batch_size"] == {"per_process": 16, "global": 32}
    assert config["train"]["devices"] == 2 and config["reproducibility"]["threads"] == 1
    single_cfg = json.loads((tmp_path / "one" / "config.json").read_text())
    assert single_cfg["distributed"]["world_size"] == 1
    history = json.loads(json.dumps(Path(out / "history.csv").read_text().splitlines()))
    assert len(history) == 1 + 8
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == doc["metrics"]["accuracy"]


@needs_two_cores
@pytest.mark.slow
def test_the_console_script_launches_two_processes(tmp_path):
    """Fabric starts the second process by running the command line again: the console script too."""
    exe = Path(sys.executable).with_name("convlens")
    if not exe.is_file():
        pytest.skip(f"no console script beside {sys.executable}")
    out = tmp_path / "run"
    proc = _run([str(exe)], "train", "--data", "digits", "--arch", "conv8-pool-fc16", "--epochs", "1",
                "--devices", "2", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["run"] == str(out) and proc.stderr.count("completed:") == 1
    assert json.loads((out / "config.json").read_text())["distributed"]["world_size"] == 2


@pytest.mark.parametrize("args, message", [
    (["--devices", "64"], "--devices 64: this machine has"),
    (["--devices", "0"], "--devices must be at least 1"),
    (["--strategy", "fsdp"], "--strategy 'fsdp': You selected the FSDP strategy but FSDP is only available on GPU"),
    (["--strategy", "ddp_spawn"], "--strategy 'ddp_spawn': convlens trains with auto or ddp"),
    (["--strategy", "nope"], "--strategy 'nope': You selected an invalid strategy name"),
    (["--num-nodes", "0"], "--num-nodes must be at least 1"),
    (["--precision", "99"], "--precision '99': Precision '99' is invalid"),
    (["--devices", "2"], "--devices 2: several processes are started by running this command line again"),
])
def test_what_cannot_run_here_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    code = main(["train", "--data", "digits", "--out", str(tmp_path / "r"), *args])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == "" and cap.err.count("\n") == 1 and message in cap.err, cap.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_an_accelerator_this_machine_lacks_is_one_line(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--accelerator", "cuda", "--devices", "2", "--out", str(tmp_path / "r")])
    cap = capsys.readouterr()
    assert code == 2 and cap.err.count("\n") == 1 and "--accelerator 'cuda'" in cap.err and "not available" in cap.err
    assert list(tmp_path.iterdir()) == []


def test_library_refuses_more_processes_than_cores(tmp_path):
    from convlens.errors import SpecError
    from convlens.train import train

    with pytest.raises(SpecError, match="devices 99: this machine has") as exc:
        train("digits", devices=99, out=str(tmp_path / "r"), progress=False)
    assert exc.value.param == "devices" and list(tmp_path.iterdir()) == []


@needs_two_cores
@pytest.mark.slow
def test_two_processes_interrupted_by_sigterm_resume_to_the_uninterrupted_weights(tmp_path):
    """SIGTERM to both processes (as SLURM sends before a time limit) after epoch 2, then --resume with
    two processes: the weights of the two-process run that was never interrupted (bitwise on CPU)."""
    import signal

    recipe = ["train", "--data", "digits", "--arch", "conv8-bn-pool-conv16-bn-pool-fc32", "--epochs", "6",
              "--patience", "0", "--devices", "2", "--json"]
    program = [sys.executable, "-m", "convlens.cli"]
    whole = _run(program, *recipe, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "cut"
    proc = subprocess.Popen([*program, *recipe, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("train 2/6"):
            break
    os.killpg(proc.pid, signal.SIGTERM)  # the whole process group: both processes
    err = "".join(seen) + proc.stderr.read()
    assert proc.stdout.read() == "" and proc.wait(timeout=300) == 130, err
    assert err.count("convlens: interrupted after") == 1 and "Traceback" not in err, err
    assert (out / "checkpoint" / "state.json").is_file()
    resumed = _run(program, "train", "--resume", str(out), "--devices", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["metrics"]["epochs_run"] == 6
    assert (out / "weights.safetensors").read_bytes() == (tmp_path / "whole" / "weights.safetensors").read_bytes()
