"""Interrupted work leaves nothing half-done (issue 17, item 3): a directory written through
``render.files.OutDir`` appears complete or not at all, and Ctrl-C or SIGTERM during
``convlens explain --out`` / ``convlens report --out`` leaves no partial output, exit 130, one line.

The real commands run under a CPU hog (two busy processes, the ``hog`` fixture) and every signal
is sent when the process has *said* it reached the point under test (a progress line, or the
``convlens-test: paused at PHASE`` line of ``CONVLENS_TEST_PAUSE``), never after a guessed time
(issue 27: ``test_interrupted_report_says_so_in_one_line[SIGTERM]`` once got exit 0 under load)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.errors import SpecError
from convlens.render import files
from convlens.render.files import STAGING, OutDir, atomic_write_bytes
from convlens.render.html import write_html


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included) -> its bytes; folders as ``name/``."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        out[p.relative_to(root).as_posix() + ("/" if p.is_dir() else "")] = b"" if p.is_dir() else p.read_bytes()
    return out


def _hidden(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if STAGING in p.name or p.name.endswith(".tmp")]


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt here even when the suite runs as a background job, whose shell
    starts it with SIGINT ignored (Python then keeps SIG_IGN and a raised SIGINT does nothing)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


# -- the transaction itself -------------------------------------------------------------------------
def test_a_new_directory_appears_whole_at_the_commit(tmp_path):
    out = OutDir(tmp_path / "a" / "b")
    out.png("grid", "x/grid.png", Image.new("RGB", (4, 4)))
    out.json("json", "r.json", {"k": 1})
    assert not (tmp_path / "a").exists()  # nothing visible yet, not even the parents
    assert len(_hidden(tmp_path)) == 1  # one hidden staging folder beside the first missing one
    saved = out.saved()
    assert out.committed
    assert sorted(_snapshot(tmp_path)) == ["a/", "a/b/", "a/b/r.json", "a/b/x/", "a/b/x/grid.png"]
    assert saved["grid"] == [tmp_path / "a" / "b" / "x" / "grid.png"] and saved.first("grid").is_file()
    (tmp_path / "by-hand").mkdir()
    assert (tmp_path / "a").stat().st_mode & 0o777 == (tmp_path / "by-hand").stat().st_mode & 0o777  # not 0700


def test_an_existing_directory_keeps_its_files_and_gets_the_new_ones(tmp_path):
    (tmp_path / "keep.txt").write_text("earlier")
    (tmp_path / "r.json").write_text("old")
    out = OutDir(tmp_path)
    out.text("json", "r.json", "new")
    out.text("note", "sub/n.txt", "n")
    assert _snapshot(tmp_path).get("r.json") == b"old" and not (tmp_path / "sub").exists()
    out.saved()
    snap = _snapshot(tmp_path)
    assert snap["keep.txt"] == b"earlier" and snap["r.json"] == b"new" and snap["sub/n.txt"] == b"n"
    assert _hidden(tmp_path) == []


def test_nothing_written_still_makes_the_directory(tmp_path):
    saved = OutDir(tmp_path / "empty").saved()
    assert saved.dir.is_dir() and saved.paths() == []


@pytest.mark.parametrize("existing", [False, True])
def test_an_exception_in_the_block_leaves_nothing(tmp_path, existing):
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        (target / "earlier.png").write_bytes(b"png")
    before = _snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with OutDir(target) as out:
            out.text("a", "a.txt", "a")
            OutDir(target / "sub").text("b", "b.txt", "b")  # joins the open transaction
            write_html(target / "index.html", "<p>x</p>")  # so does every atomic write under it
            raise KeyboardInterrupt
    assert _snapshot(tmp_path) == before


def test_the_block_commits_everything_written_under_it_at_its_end(tmp_path):
    target = tmp_path / "out"
    with OutDir(target, param="out") as out:
        inner = OutDir(target / "sub")
        inner.text("b", "b.txt", "b")
        assert inner.saved().first("b") == target / "sub" / "b.txt"
        assert not target.exists()  # the inner save waits for the block
        write_html(target / "index.html", "<p>x</p>")
        atomic_write_bytes(tmp_path / "outside.bin", b"1")  # not under the target: written at once
        assert (tmp_path / "outside.bin").read_bytes() == b"1"
        out.text("a", "a.txt", "a")
    assert out.committed
    assert sorted(k for k in _snapshot(target) if not k.endswith("/")) == ["a.txt", "index.html", "sub/b.txt"]
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_a_signal_during_the_commit_waits_for_the_last_file(tmp_path, monkeypatch, existing):
    target = tmp_path / "out"
    if existing:
        target.mkdir()
    out = OutDir(target)
    for i in range(5):
        out.text("t", f"{i}.txt", str(i))
    real_rename, real_replace = os.rename, os.replace
    calls = []

    def interrupting(real):
        def move(src, dst):
            calls.append(dst)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the moves
            return real(src, dst)
        return move

    monkeypatch.setattr(files.os, "rename", interrupting(real_rename))
    monkeypatch.setattr(files.os, "replace", interrupting(real_replace))
    with pytest.raises(KeyboardInterrupt):  # delivered, but only once every file is in
        out.saved()
    assert out.committed and calls
    assert sorted(p.name for p in target.iterdir()) == [f"{i}.txt" for i in range(5)]
    assert _hidden(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_name_clash_with_a_folder_moves_nothing(tmp_path):
    (tmp_path / "grid.png").mkdir()
    (tmp_path / "old.txt").write_text("old")
    before = _snapshot(tmp_path)
    out = OutDir(tmp_path, param="out")
    out.text("a", "a.txt", "a")
    out.png("grid", "grid.png", Image.new("RGB", (2, 2)))
    with pytest.raises(SpecError, match="grid.png is a folder; nothing written") as err:
        out.saved()
    assert err.value.param == "out"
    assert _snapshot(tmp_path) == before


def test_sigterm_in_the_block_ends_it_as_ctrl_c_does(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        with OutDir(tmp_path / "out") as out:
            out.text("a", "a.txt", "a")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(files.NoSpaceError, match=r"^no space left on device while writing .*a\.bin"):
        atomic_write_bytes(tmp_path / "a.bin", b"x")  # one line naming the file, not an OSError
    assert list(tmp_path.iterdir()) == []

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", denied)
    with pytest.raises(PermissionError):  # any other error goes on as it was
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_transaction_left_open_is_removed_when_the_process_ends(tmp_path):
    code = ("from convlens.render.files import OutDir\n"
            f"o = OutDir({str(tmp_path / 'out')!r}); o.text('a', 'a.txt', 'a')\n"
            f"p = OutDir({str(tmp_path)!r}); p.text('b', 'b.txt', 'b')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_appeared_meanwhile_is_merged_into(tmp_path):
    out = OutDir(tmp_path / "out")
    out.text("a", "a.txt", "a")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other.txt").write_text("other")  # another writer made it first
    out.saved()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "other.txt"]
    assert _hidden(tmp_path) == []


# -- real commands, really interrupted ---------------------------------------------------------------
N_IMAGES = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """40 small photos (64x60, the CMU faces size) and one broken file (the command names it on
    stderr before any work: a sign of life for the report, which prints no progress)."""
    from skimage import data

    root = tmp_path_factory.mktemp("interrupt") / "images"
    root.mkdir()
    base = Image.fromarray(np.asarray(data.chelsea()))
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        x, y = (int(v) for v in rng.integers(0, 100, 2))
        base.crop((x, y, x + 320, y + 300)).resize((64, 60)).save(root / f"cat{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def hog():
    """Two processes that keep two cores busy while the module's real commands run: the tests must
    hold on a loaded machine (they synchronise on what the process says, so load only slows them)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _start(argv: list[str], pause: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("CONVLENS_TEST_PAUSE", None)
    if pause is not None:
        env["CONVLENS_TEST_PAUSE"] = pause
    return subprocess.Popen([sys.executable, "-c", "from convlens.cli import main; main()", *argv],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt(proc: subprocess.Popen, sig: int, marker: str) -> tuple[int, str, str]:
    """Read stderr until a line starts with ``marker``, send ``sig``; the exit code, stdout and all
    of stderr."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(marker):
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"the command ended before {marker!r}: {''.join(lines)}")
    proc.send_signal(sig)
    rest = proc.stderr.read()
    out = proc.stdout.read()
    proc.wait(timeout=120)
    return proc.returncode, out, "".join(lines) + rest


def _one_line(err: str, starts: str) -> None:
    said = [ln for ln in err.splitlines() if ln.startswith("convlens:")]
    assert len(said) == 1 and said[0].startswith(starts), err
    assert "Traceback" not in err, err


EXPLAIN = ["explain", "--method", "gradcam,gradcam++", "--batch-size", "4", "--json"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_explain_writes_nothing(folder, tmp_path, sig, hog):
    out = tmp_path / "out" / "explained"
    proc = _start([*EXPLAIN, str(folder), "--out", str(out)])
    code, stdout, err = _interrupt(proc, getattr(signal, sig), "explain 4/")  # a batch is done
    assert code == 130, err
    assert stdout == ""
    _one_line(err, f"convlens: interrupted; nothing was written to {out}")
    assert list(tmp_path.iterdir()) == []  # neither the folder, nor its parent, nor a staging one


@pytest.mark.parametrize("sig", ["SIGINT"])  # (SIGTERM takes the same path: see the test above)
def test_interrupted_explain_leaves_earlier_outputs_as_they_were(folder, tmp_path, sig, hog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "cat00").mkdir()
    (out / "cat00" / "grid.png").write_bytes(b"an earlier grid")
    before = _snapshot(tmp_path)
    proc = _start([*EXPLAIN, str(folder), "--out", str(out)])
    code, stdout, err = _interrupt(proc, getattr(signal, sig), "explain 8/")
    assert code == 130 and stdout == "", err
    _one_line(err, f"convlens: interrupted; {out} is as it was")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("sig", ["SIGTERM"])
def test_explain_interrupted_while_writing_is_complete_or_nothing(folder, tmp_path, sig, hog):
    """The signal lands while the files are being staged (or moved in): afterwards either the
    whole output is there (the moves finished first, and the line says so) or nothing is."""
    out = tmp_path / "explained"
    proc = _start([*EXPLAIN, str(folder), "--out", str(out)])
    for line in proc.stderr:  # the last batch is done: the save starts now
        if line.startswith(f"explain {N_IMAGES}/"):
            break
    deadline = time.monotonic() + 60
    while not any(STAGING in p.name for p in tmp_path.iterdir()) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(getattr(signal, sig))
    err, stdout = proc.stderr.read(), proc.stdout.read()
    proc.wait(timeout=120)
    names = sorted(p.name for p in tmp_path.iterdir())
    if proc.returncode == 0:  # it finished before the signal: complete
        assert names == ["explained"]
    else:
        assert proc.returncode == 130 and stdout == "", err
        if names:
            _one_line(err, f"convlens: interrupted; {out} was written in full")
            assert names == ["explained"]
        else:
            _one_line(err, f"convlens: interrupted; nothing was written to {out}")
    if names:  # complete: every image's grid and both methods' overlays
        grids = sorted(p.parent.name for p in out.glob("*/grid.png"))
        assert grids == [f"cat{i:02d}" for i in range(N_IMAGES)]
        assert len(list(out.glob("*/*.png"))) == N_IMAGES * 3
        assert _hidden(tmp_path) == []


#: the report is interrupted inside its transaction: the command pauses there (CONVLENS_TEST_PAUSE=out-open,
#: after its SIGINT/SIGTERM handling is set up) and says so, and the signal is sent then
REPORT = ["report", "--method", "gradcam,gradcam++", "--json"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_report_leaves_nothing(folder, tmp_path, sig, hog):
    out = tmp_path / "report"
    proc = _start(REPORT + [str(folder), "--out", str(out)], pause="out-open")
    code, stdout, err = _interrupt(proc, getattr(signal, sig), "convlens-test: paused at out-open")
    assert code != 0 and stdout == "", err
    assert "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_report_says_so_in_one_line(folder, tmp_path, sig, hog):
    out = tmp_path / "report"
    proc = _start(REPORT + [str(folder), "--out", str(out)], pause="out-open")
    code, stdout, err = _interrupt(proc, getattr(signal, sig), "convlens-test: paused at out-open")
    assert code == 130, err
    _one_line(err, f"convlens: interrupted; nothing was written to {out}")


def test_a_signal_whose_interrupt_was_swallowed_still_rolls_back(tmp_path):
    """The KeyboardInterrupt a signal handler raises can be lost (raised inside a ``__del__`` or a
    library's ``except BaseException``): the transaction still saw the signal, so it rolls back and
    the interruption goes on instead of the work passing for done."""
    with pytest.raises(KeyboardInterrupt):
        with OutDir(tmp_path / "out") as out:
            out.text("a", "a.txt", "a")
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
            except KeyboardInterrupt:
                pass  # swallowed, as a finalizer would
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
