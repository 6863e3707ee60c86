"""Nothing a user owns is lost (issue 27, item 3): ``--force`` replaces only convlens' own output,
two writers of one ``--out`` cannot both succeed, ``--out .``/``~``/``/`` are refused, and a full
disk, a kill or an exception leaves the earlier state or one that says it is incomplete.

The two-process tests synchronise on what the first process says (``CONVLENS_TEST_PAUSE`` makes it
print ``convlens-test: paused at PHASE pid N`` and wait for a line on stdin), never on time."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.audit import audit
from convlens.audit.shards import read_manifest, write_manifest
from convlens.cli import main
from convlens.render import files
from convlens.render.files import MARKER, clean_leftovers, is_convlens_output, lock_output, unlock_output

TINY = "conv4-bn-pool-gap"
TRAIN = ["train", "--data", "digits", "--arch", TINY, "--epochs", "1"]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): (b"/" if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def _one_line(err: str, *words: str) -> str:
    said = [ln for ln in err.splitlines() if ln.startswith("convlens")]  # (progress lines may come before)
    assert len(said) == 1 and said[0].startswith("convlens: error:") and "Traceback" not in err, err
    assert "Errno" not in err and "OSError" not in err, err
    for w in words:
        assert w in said[0], said[0]
    return said[0]


def _start(argv: list[str], pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    env.pop("CONVLENS_TEST_PAUSE", None)
    if pause:
        env["CONVLENS_TEST_PAUSE"] = pause
    return subprocess.Popen([sys.executable, "-c", "from convlens.cli import main; main()", *argv],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _paused(proc: subprocess.Popen, phase: str) -> int:
    """Read the process's stderr until it says it is paused at ``phase``; its pid."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"convlens-test: paused at {phase} pid "):
            return int(line.split()[-1])
    proc.wait(timeout=60)
    pytest.fail(f"the command ended before pausing at {phase}: {''.join(seen)}")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("CONVLENS_TEST_PAUSE", None)
    return subprocess.run([sys.executable, "-c", "from convlens.cli import main; main()", *argv],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)


# -- --force: only over convlens' own output ------------------------------------------------------
def test_force_never_replaces_a_folder_convlens_did_not_write(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    thesis = tmp_path / "mythesis"
    (thesis / "sub").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{article}")
    (thesis / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = _snapshot(tmp_path)
    code = main([*TRAIN, "--out", "mythesis", "--force"])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    _one_line(cap.err, "mythesis", "did not write", "--force")
    assert _snapshot(tmp_path) == before  # nothing deleted, nothing added


def test_force_replaces_an_earlier_run_and_one_from_before_the_marker(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    assert (out / MARKER).is_file() and is_convlens_output(out)
    assert main([*TRAIN, "--out", str(out), "--seed", "2", "--json"]) == 2  # without --force: refused
    assert "already exists" in capsys.readouterr().err
    (out / MARKER).unlink()  # a run written before convlens wrote markers: config.json + weights
    assert is_convlens_output(out)
    assert main([*TRAIN, "--out", str(out), "--seed", "2", "--force", "--json"]) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 2
    assert (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary or old sibling left


def test_an_empty_folder_and_an_earlier_audit_count_as_replaceable(tmp_path):
    (tmp_path / "empty").mkdir()
    assert is_convlens_output(tmp_path / "empty")
    (tmp_path / "aud").mkdir()
    (tmp_path / "aud" / "audit.json").write_text(json.dumps({"format": "convlens-audit/1"}))
    assert is_convlens_output(tmp_path / "aud")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "audit.json").write_text("{}")  # a user's own file of that name
    assert not is_convlens_output(tmp_path / "mine")


# -- --out that would mix with what the user keeps ------------------------------------------------
@pytest.mark.parametrize("given", [".", "~", "/", "..", "CWD", "~/", "./"])
@pytest.mark.parametrize("command", ["train", "kernels"])
def test_out_at_home_root_or_cwd_is_refused(tmp_path, monkeypatch, capsys, given, command):
    cwd = tmp_path / "home" / "work"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(cwd)
    out = str(cwd) if given == "CWD" else given
    before = _snapshot(tmp_path)
    argv = ([*TRAIN, "--force"] if command == "train" else ["kernels", "demo", "--kernel", "sobel-x"])
    code = main([*argv, "--out", out])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    _one_line(cap.err, "--out", "give a new folder")
    assert _snapshot(tmp_path) == before


def test_a_folder_under_the_cwd_is_fine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["kernels", "demo", "--kernel", "sobel-x", "--out", "k", "--json"]) == 0
    capsys.readouterr()
    assert (tmp_path / "k" / "kernels.png").is_file()


# -- one writer per --out -------------------------------------------------------------------------
def test_two_trainings_of_one_out_cannot_both_succeed(tmp_path):
    out = tmp_path / "race"
    first = _start([*TRAIN, "--out", str(out), "--seed", "1", "--json"], pause="out-locked")
    try:
        pid = _paused(first, "out-locked")  # it holds the lock now, and waits
        second = _run([*TRAIN, "--out", str(out), "--seed", "2", "--json"])
        assert second.returncode == 2 and second.stdout == ""
        _one_line(second.stderr, f"process {pid} is writing there now")
        forced = _run([*TRAIN, "--out", str(out), "--seed", "2", "--force", "--json"])  # --force does not help
        assert forced.returncode == 2
        _one_line(forced.stderr, f"process {pid}")
        first.stdin.write("\n")
        first.stdin.close()
        out_text, err = first.stdout.read(), first.stderr.read()
        assert first.wait(timeout=300) == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    said = json.loads(out_text)
    assert said["run"] == str(out)
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1  # the folder holds its run
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == said["metrics"]["accuracy"]
    third = _run([*TRAIN, "--out", str(out), "--seed", "3", "--force", "--json"])  # the lock was released
    assert third.returncode == 0, third.stderr


def test_the_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path):
    out = tmp_path / "o"
    lock_output(out)
    try:
        assert lock_output(out) == Path(os.path.realpath(out))  # again in this process: a no-op
        code = ("from convlens.render.files import lock_output; import sys\n"
                f"lock_output({str(out)!r})\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and f"process {os.getpid()} is writing there now" in r.stderr
    finally:
        unlock_output(out)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# -- killed, failed, full: the earlier state or one that says so ----------------------------------
def test_a_killed_save_leaves_a_temporary_folder_that_the_next_run_removes(tmp_path):
    out = tmp_path / "run"
    proc = _start([*TRAIN, "--out", str(out), "--json"], pause="run-staged")
    try:
        _paused(proc, "run-staged")  # every file written in the temporary folder, nothing moved yet
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the run folder is still the unfinished run its epochs' checkpoints made (resumable, no weights),
    # beside the temporary folder of the killed final save
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0].startswith(".run.tmp-") and left[1] == "run", left
    assert not (out / "weights.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["result"] == {"stopped": "unfinished"}
    again = _run(["train", "--resume", str(out), "--json"])  # the next run continues it, and cleans up
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "weights.safetensors").is_file()


def test_a_kill_between_the_two_renames_gives_the_earlier_run_back(tmp_path):
    earlier = tmp_path / ".run.old-12345"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    (tmp_path / ".run.tmp-abcdef").mkdir()
    clean_leftovers(tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_a_run_is_one_line(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    out = tmp_path / "run"
    code = main([*TRAIN, "--out", str(out), "--json"])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    _one_line(cap.err, f"no space left on device while writing {out}", "the checkpoint of train epoch",
              f"is kept: then continue with `convlens train --resume {out}`")
    # no temporary folder; the run folder is the unfinished run of its epochs' checkpoints, resumable
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert json.loads((out / "config.json").read_text())["result"] == {"stopped": "unfinished"}


def test_a_full_disk_while_writing_a_command_output_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files.Path, "write_bytes", _enospc)
    out = tmp_path / "k"
    code = main(["kernels", "demo", "--kernel", "sobel-x", "--out", str(out), "--json"])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    line = _one_line(cap.err, "no space left on device while writing", str(out))
    assert "Errno" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_met_by_a_library_writer_is_one_line(monkeypatch, capsys):
    """An OSError(ENOSPC) raised by code convlens does not wrap (a library's writer) still ends in
    one line, exit 2, from the CLI's main."""
    monkeypatch.setattr("convlens.lens.kernels.apply_kernels", _enospc)
    code = main(["kernels", "demo", "--kernel", "sobel-x", "--json"])
    cap = capsys.readouterr()
    assert code == 2
    _one_line(cap.err, "no space left on device while writing")


def _images(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from convlens.train import train

    root = tmp_path_factory.mktemp("small")
    out = root / "run"
    train(f"folder:{_images(root / 'data')}", arch=TINY, epochs=1, out=str(out), progress=False)
    return out


def test_an_audit_stopped_by_a_full_disk_says_failed(small_run, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", _enospc)
    out = tmp_path / "aud"
    with pytest.raises(OSError, match="No space left"):
        audit(str(small_run), _images(tmp_path / "d"), out=out, shard_size=4)
    m = read_manifest(out)
    assert m["state"] == "failed" and "No space left" in m["error"]


def test_an_audit_whose_writer_was_killed_is_not_running(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    tmp_path.mkdir(exist_ok=True)
    write_manifest(tmp_path, {"state": "running", "shards": 1})
    m = json.loads((tmp_path / "audit.json").read_text())
    assert m["pid"] == os.getpid() and m["host"] == socket.gethostname()
    assert read_manifest(tmp_path)["state"] == "running"  # this process: alive
    (tmp_path / "audit.json").write_text(json.dumps({**m, "pid": dead.pid}))
    assert read_manifest(tmp_path)["state"] == "interrupted"


# -- a real full disk: a 1 MB tmpfs (needs root) ---------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs mounted under tmp_path and filled to the last byte but ``spare``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the monkeypatched ENOSPC tests above always run)")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def fill(spare: int = 0) -> None:
        with open(disk / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        if spare:
            os.truncate(disk / "filler", max(0, (disk / "filler").stat().st_size - spare))

    try:
        yield disk, fill
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_train_onto_a_full_disk_is_one_line_and_leaves_nothing(full_disk):
    disk, fill = full_disk
    fill()
    r = _run([*TRAIN, "--out", str(disk / "run"), "--json"])
    assert r.returncode == 2 and r.stdout == ""
    _one_line(r.stderr, "no space left on device while writing", str(disk / "run"))
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_kernels_onto_a_full_disk_is_one_line_and_leaves_nothing(full_disk):
    disk, fill = full_disk
    fill()
    r = _run(["kernels", "demo", "--kernel", "sobel-x", "--out", str(disk / "k"), "--json"])
    assert r.returncode == 2 and r.stdout == ""
    _one_line(r.stderr, "no space left on device while writing")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_an_audit_that_fills_the_disk_says_failed(full_disk, small_run, tmp_path):
    disk, fill = full_disk
    data = _images(tmp_path / "d", 40)
    fill(spare=12 * 1024)  # room for the manifest and a shard or two, not for all of them
    r = _run(["audit", str(data), "--model", str(small_run), "--out", str(disk / "aud"), "--shard-size", "4",
              "--json"])
    assert r.returncode == 2 and r.stdout == "", r.stderr
    _one_line(r.stderr, "no space left on device while writing")
    m = json.loads((disk / "aud" / "audit.json").read_text())
    assert m["state"] == "failed", m


def test_no_usable_lock_folder_leaves_the_command_unlocked_not_failed(tmp_path, monkeypatch, capsys):
    def unwritable():
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "_lock_dir", unwritable)
    assert main(["kernels", "demo", "--kernel", "sobel-x", "--out", str(tmp_path / "k"), "--json"]) == 0
    capsys.readouterr()
    assert (tmp_path / "k" / "kernels.png").is_file()
