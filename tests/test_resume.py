"""Resumable training (issue 32, item 2): a run that stops before its last epoch keeps a checkpoint
of its last complete epoch (safetensors + JSON), and ``convlens train --resume RUN`` continues it to
bitwise the weights of the run that was never interrupted (CPU, one process, the same threads).  The
checkpoint is written at the end of every epoch, so a run killed hard (SIGKILL) continues too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convlens.cli import main
from convlens.errors import RunError
from convlens.models.run import Run
from convlens.train import train
from convlens.train.checkpoint import read as read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARCH = "conv8-bn-pool-conv16-bn-pool-fc32-drop0.2"  # batch norms, dropout and augmentation: every RNG in play
RECIPE = ["--data", "digits", "--arch", ARCH, "--epochs", "6", "--batch-size", "64", "--augment", "rotate=5",
          "--patience", "0"]


def _env() -> dict[str, str]:
    """One thread in every process: bitwise equality holds for the same thread count."""
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convlens.cli", "train", *args], capture_output=True, text=True,
                          env=_env(), timeout=600)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = _cli(*RECIPE, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_sigterm_after_an_epoch_then_resume_is_bitwise_the_uninterrupted_run(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "convlens.cli", "train", *RECIPE, "--out", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen = []
    for line in proc.stderr:  # the epoch line is printed once the epoch's checkpoint is taken
        seen.append(line)
        if line.startswith("train 2/6"):
            break
    proc.send_signal(signal.SIGTERM)
    err = "".join(seen) + proc.stderr.read()
    assert proc.stdout.read() == ""
    assert proc.wait(timeout=300) == 130, err
    assert "--resume" in err and "Traceback" not in err
    config = json.loads((out / "config.json").read_text())
    assert config["result"]["stopped"] == "interrupted"
    ckpt = read_checkpoint(out)
    k = ckpt.epoch
    assert 2 <= k < 6 and len(ckpt.history) == k and ckpt.phase == "train"
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "base.a.safetensors", "state.a.safetensors", "state.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    resumed = _cli("--resume", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    doc = json.loads(resumed.stdout)
    assert doc["run"] == str(out) and doc["metrics"]["stopped"] == "completed" and doc["metrics"]["epochs_run"] == 6
    assert f"resuming {out} after train epoch {k}" in resumed.stderr
    assert (out / "weights.safetensors").read_bytes() == (uninterrupted / "weights.safetensors").read_bytes()
    whole = json.loads((uninterrupted / "metrics.json").read_text())
    assert doc["metrics"]["accuracy"] == whole["accuracy"] and doc["metrics"]["confusion"] == whole["confusion"]
    cols = lambda p: [ln.split(",")[:7] for ln in (p / "history.csv").read_text().splitlines()]  # noqa: E731
    assert cols(out) == cols(uninterrupted)  # every epoch's losses, accuracies and rates, not only the last
    assert not (out / "checkpoint").exists()  # completed: nothing left to continue
    config = json.loads((out / "config.json").read_text())
    assert config["result"]["resumed"][0]["after_epochs"] == k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.fixture(scope="module")
def stopped_early(tmp_path_factory):
    """A run that reached its goal at an early epoch (in this process)."""
    out = tmp_path_factory.mktemp("early") / "run"
    run = train("digits", arch=ARCH, epochs=5, batch_size=64, augment="rotate=5", out=str(out), progress=False,
                stop_at="accuracy=0.5", patience=None)
    assert run.metrics["stopped"] == "goal" and run.metrics["epochs_run"] < 5
    return out


def test_a_run_that_finished_early_continues_to_the_same_weights(stopped_early, tmp_path):
    whole = train("digits", arch=ARCH, epochs=5, batch_size=64, augment="rotate=5", out=str(tmp_path / "whole"),
                  progress=False, patience=None)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in _tree(stopped_early).items():  # resume a copy: the fixture stays for the next tests
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    run = train(resume=str(copy), progress=False, stop_at="")  # the goal dropped: on to the last epoch
    assert run.metrics["stopped"] == "completed" and run.metrics["epochs_run"] == 5
    assert (copy / "weights.safetensors").read_bytes() == (tmp_path / "whole" / "weights.safetensors").read_bytes()
    assert run.metrics["accuracy"] == whole.metrics["accuracy"]


def test_the_checkpoint_is_safetensors_and_json_only(stopped_early):
    from safetensors.torch import load_file

    files = sorted(p.name for p in (stopped_early / "checkpoint").iterdir())
    assert files == ["base.a.safetensors", "state.a.safetensors", "state.json"]
    state = json.loads((stopped_early / "checkpoint" / "state.json").read_text())
    # state.json names its tensor files (renaming it is the commit): one checkpoint written at the end, its
    # tensors all in the base
    assert state["tensors"] == "state.a.safetensors" and state["base"] == "base.a.safetensors"
    assert load_file(str(stopped_early / "checkpoint" / "state.a.safetensors")) == {}
    tensors = load_file(str(stopped_early / "checkpoint" / "base.a.safetensors"))
    assert sorted(state["from_base"]) == sorted(tensors)
    assert state["format"] == "convlens-checkpoint" and state["phase"] == "train"
    assert {"model.features.conv1.conv.weight", "best.features.conv1.conv.weight", "rng.torch", "rng.augment",
            "rng.numpy"} <= set(tensors)
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in tensors)
    assert state["scheduler"]["total_steps"] > 0 and len(state["history"]) == state["epoch"]


def test_a_checkpoint_of_the_one_file_layout_is_still_read(stopped_early, tmp_path):
    """Checkpoints written before the slots and the base: ``state.safetensors``, a state.json naming none."""
    (tmp_path / "checkpoint").mkdir()
    state = json.loads((stopped_early / "checkpoint" / "state.json").read_text())
    for key in ("tensors", "base", "base_token", "from_base"):
        del state[key]
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint" / "state.safetensors").write_bytes(
        (stopped_early / "checkpoint" / "base.a.safetensors").read_bytes())
    ckpt, now = read_checkpoint(tmp_path), read_checkpoint(stopped_early)
    assert ckpt.epoch == now.epoch and all(ckpt.tensors[k].equal(now.tensors[k]) for k in now.tensors)
    state["tensors"] = "../../elsewhere.safetensors"
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(RunError, match="names '../../elsewhere.safetensors' as its tensors"):
        read_checkpoint(tmp_path)


def test_sigkill_mid_training_leaves_an_unfinished_run_that_resumes_bitwise(uninterrupted, tmp_path, capsys):
    """SIGKILL while epoch 3's checkpoint is half-written (its tensors staged, its state.json not yet
    renamed into place; the process says so at the ``checkpoint-staged`` pause point and waits there):
    the folder holds epoch 2's checkpoint, says it is an unfinished run, not a trained one, and
    ``--resume`` continues it to the uninterrupted run's weights, bitwise."""
    assert not (uninterrupted / "checkpoint").exists()  # a completed run keeps none
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "convlens.cli", "train", *RECIPE, "--out", str(out), "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), "CONVLENS_TEST_PAUSE": "checkpoint-staged"})
    seen, pauses = [], 0
    for line in proc.stderr:  # the first pause is epoch 1's, the k-th epoch k's
        seen.append(line)
        if line.startswith("convlens-test: paused at checkpoint-staged"):
            pauses += 1
            if pauses == 3:
                break
            proc.stdin.write("\n")
            proc.stdin.flush()
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL and pauses == 3, "".join(seen)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    assert "".join(seen).count("train 2/6") == 1 and "train 3/6" not in "".join(seen)

    config = json.loads((out / "config.json").read_text())
    assert config["result"] == {"stopped": "unfinished"} and config["train"]["epochs"] == 6
    assert sorted(p.name for p in out.iterdir()) == [".convlens-output", "checkpoint", "config.json", "splits.json"]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [  # epoch 3's tensors staged beside 2's
        "base.a.safetensors", "state.a.safetensors", "state.b.safetensors", "state.json"]
    ckpt = read_checkpoint(out)
    assert ckpt.epoch == 2 and ckpt.phase == "train" and len(ckpt.history) == 2
    # evaluate, the explorer
    with pytest.raises(RunError, match="an unfinished run .* continue it with `convlens train --resume"):
        Run.load(out, weights=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    code, stdout, err = _resume_cli(tmp_path, capsys, ["--data", "digits", "--out", out])
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert (f"{out}: an unfinished run (killed after train epoch 2 of 6; no weights yet); continue it with "
            f"`convlens train --resume {out}`, or pass --force to replace it") in err

    resumed = _cli("--resume", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    doc = json.loads(resumed.stdout)
    assert doc["metrics"]["stopped"] == "completed" and doc["metrics"]["epochs_run"] == 6
    assert f"resuming {out} after train epoch 2" in resumed.stderr
    assert (out / "weights.safetensors").read_bytes() == (uninterrupted / "weights.safetensors").read_bytes()
    cols = lambda p: [ln.split(",")[:7] for ln in (p / "history.csv").read_text().splitlines()]  # noqa: E731
    assert cols(out) == cols(uninterrupted)
    config = json.loads((out / "config.json").read_text())
    assert config["result"]["stopped"] == "completed" and config["result"]["resumed"][0]["after_epochs"] == 2
    assert not (out / "checkpoint").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _frozen_checkpoints():
    """Two epochs' checkpoints of a net whose first layer is frozen; the trained layer's bias holds a
    0.0 that turns into -0.0 (equal for ``torch.equal``, not bit for bit)."""
    import torch

    from convlens.train.checkpoint import take

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 3))
    net[0].requires_grad_(False)
    opt = torch.optim.AdamW(net[1].parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    out = []
    for epoch in (1, 2):
        loss = net(torch.randn(8, 64)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            net[1].bias[0] = 0.0 if epoch == 1 else -0.0
        state = {k: v.clone() for k, v in net.state_dict().items()}
        out.append(take(phase="train", epoch=epoch, model_state=state, optimizer=opt, scheduler=None, aug_gen=gen,
                        history=[{"epoch": epoch}] * epoch, best={"score": 1.0, "acc": 0.5, "epoch": 1, "state": state},
                        since_best=0))
    return out


def test_what_did_not_change_is_not_written_again_and_reads_back_bit_for_bit(tmp_path):
    import torch
    from safetensors.torch import load_file

    from convlens.train.checkpoint import Writer

    first, second = _frozen_checkpoints()
    writer = Writer()
    writer.write(tmp_path, first)
    writer.write(tmp_path, second)
    folder = tmp_path / "checkpoint"
    state = json.loads((folder / "state.json").read_text())
    own = load_file(str(folder / state["tensors"]))
    assert {"model.0.weight", "model.0.bias", "best.0.weight"} <= set(state["from_base"])  # frozen: in the base
    assert {"model.1.weight", "model.1.bias", "rng.torch"} <= set(own) and not set(own) & set(state["from_base"])
    got = read_checkpoint(tmp_path)
    assert sorted(got.tensors) == sorted(second.tensors) and got.epoch == 2
    for k, v in second.tensors.items():  # bit for bit: -0.0 stays -0.0
        assert got.tensors[k].dtype == v.dtype and torch.equal(got.tensors[k].view(-1).view(torch.uint8),
                                                               v.view(-1).view(torch.uint8)), k
    assert str(got.tensors["model.1.bias"][0].item()) == "-0.0"
    assert sorted(p.name for p in folder.iterdir()) == ["base.a.safetensors", "state.b.safetensors", "state.json"]
    Writer().write(tmp_path, first)  # another writer (a resumed run): a base of its own, in the other name
    assert sorted(p.name for p in folder.iterdir()) == ["base.b.safetensors", "state.a.safetensors", "state.json"]
    state = json.loads((folder / "state.json").read_text())
    state["base_token"] = "0" * 16
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(RunError, match="base.b.safetensors: not the base this checkpoint was written with"):
        read_checkpoint(tmp_path)


class _Crash(Exception):
    pass


def test_a_run_on_arrays_that_crashed_mid_training_resumes_from_its_folder(tmp_path, monkeypatch):
    """Arrays held in memory (a notebook's): the unfinished folder keeps them (``data.safetensors``) from
    its first epoch, so a run that died in epoch 3 (here an exception, as a crash would) resumes alone."""
    from convlens.data import load_source
    from convlens.train import fit

    d = load_source("digits")
    x, y = d.images[:, 0].numpy(), d.labels.numpy()
    kw = dict(arch=ARCH, epochs=4, batch_size=64, augment="rotate=5", progress=False, patience=None)
    whole = train((x, y), out=str(tmp_path / "whole"), **kw)
    real = fit._Reporter.epoch

    def crash_in_epoch_3(self, row, total):
        if row["epoch"] == 3:
            raise _Crash
        real(self, row, total)

    monkeypatch.setattr(fit._Reporter, "epoch", crash_in_epoch_3)
    with pytest.raises(_Crash):
        train((x, y), out=str(tmp_path / "cut"), **kw)
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert json.loads((cut / "config.json").read_text())["result"] == {"stopped": "unfinished"}
    assert (cut / "data.safetensors").is_file() and not (cut / "weights.safetensors").exists()
    assert read_checkpoint(cut).epoch == 3  # epoch 3 ended (its checkpoint written) before the crash
    run = train(resume=str(cut), progress=False)
    assert run.metrics["epochs_run"] == 4 and run.metrics["accuracy"] == whole.metrics["accuracy"]
    assert (cut / "weights.safetensors").read_bytes() == (tmp_path / "whole" / "weights.safetensors").read_bytes()


def _resume_cli(tmp_path, capsys, args):
    code = main(["train", *[str(a) for a in args]])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_resume_of_a_completed_run_is_refused(uninterrupted, tmp_path, capsys):
    before = _tree(uninterrupted)
    code, stdout, err = _resume_cli(tmp_path, capsys, ["--resume", uninterrupted])
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "holds no checkpoint" in err, err
    assert _tree(uninterrupted) == before


@pytest.mark.parametrize("args, message", [
    (["--resume", "{tmp}/empty"], "not a convlens run (no config.json"),
    (["--resume", "{tmp}/missing"], "no such run directory"),
    (["--resume", "{run}", "--data", "folder:{tmp}/imgs"],
     "--data 'folder:{tmp}/imgs': {run} was trained on other data (digits: kind 'digits', given 'folder')"),
    (["--resume", "{run}", "--arch", "conv4-gap"], "--arch 'conv4-gap': {run} was trained with "
                                                    "'conv8-bn-pool-conv16-bn-pool-fc32-drop0.2'"),
    (["--resume", "{run}", "--lr", "0.1"], "--lr cannot be given with --resume"),
    (["--resume", "{run}", "--out", "{tmp}/else"], "--out cannot be given with --resume"),
    (["--resume", "{run}", "--devices", "64"], "--devices 64: this machine has"),
])
def test_bad_resume_is_one_line_exit_2_and_writes_nothing(stopped_early, tmp_path, capsys, args, message):
    import numpy as np
    from PIL import Image

    (tmp_path / "empty").mkdir()
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    before, listing = _tree(stopped_early), sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(stopped_early)) for a in args]
    message = message.replace("{tmp}", str(tmp_path)).replace("{run}", str(stopped_early))
    code, stdout, err = _resume_cli(tmp_path, capsys, args)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err
    assert _tree(stopped_early) == before and sorted(p.name for p in tmp_path.iterdir()) == listing
    assert not [p for p in stopped_early.parent.iterdir() if p.name.startswith(".")]


def test_library_resume_refuses_a_changed_option(stopped_early):
    with pytest.raises(RunError, match="a resumed run keeps its recorded batch_size"):
        train(resume=str(stopped_early), batch_size=7, progress=False)
