"""The lessons in docs/notebooks run: each is executed top to bottom in a fresh kernel of this
venv's Python (nbclient + ipykernel), in a temporary working directory, and fails on any error.

Also: committed notebooks carry no outputs (``docs/notebooks/strip_outputs.py`` removes them),
every notebook shows its convlens results inline (a PNG and, for tables, HTML) and uses only
public names (no ``_private`` import from convlens).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "docs" / "notebooks"
DATA = Path(os.environ.get("CONVLENS_DATA", ROOT.parent / "shared" / "data"))  # as conftest.py reads it
CELL_TIMEOUT = 300  # seconds per cell: generous for a loaded 2-core box (each notebook takes well under a minute alone)
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
#: seconds each notebook took here, printed at the end of the session (see pytest_terminal_summary)
TIMES: dict[str, float] = {}


def _kernel_manager(tmp: Path):
    """A kernel manager whose only kernelspec runs *this* interpreter (the venv's), whatever
    kernelspecs the user has installed elsewhere."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp / "kernels" / "convlens-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "convlens (venv)", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="convlens-venv", kernel_spec_manager=ksm)


def execute(path: Path, workdir: Path):
    """Run notebook ``path`` in ``workdir``; returns the executed notebook (nbclient raises
    CellExecutionError on the first failing cell)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=_kernel_manager(workdir / ".kernel"), timeout=CELL_TIMEOUT,
                            allow_errors=False, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_the_lessons_are_there():
    names = [p.name for p in PATHS]
    assert len(names) == 8, names
    for i, n in enumerate(names, 1):
        assert n.startswith(f"{i:02d}_"), names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_notebook_has_no_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs; run "
                       f"`.venv/bin/python docs/notebooks/strip_outputs.py {path.relative_to(ROOT)}`")
    nbformat.validate(nb)


def test_strip_script_strips_and_checks(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    nb = new_notebook(cells=[new_code_cell("1 + 1", execution_count=3,
                                           outputs=[new_output("execute_result", {"text/plain": "2"},
                                                               execution_count=3)])])
    p = tmp_path / "x.ipynb"
    nbformat.write(nb, p)
    script = NOTEBOOKS / "strip_outputs.py"
    check = subprocess.run([sys.executable, str(script), "--check", str(p)], capture_output=True, text=True)
    assert check.returncode == 1 and "x.ipynb" in check.stdout
    subprocess.run([sys.executable, str(script), str(p)], check=True, capture_output=True)
    again = nbformat.read(p, as_version=4)
    assert again.cells[0].outputs == [] and again.cells[0].execution_count is None
    assert again.cells[0].source == "1 + 1"
    assert subprocess.run([sys.executable, str(script), "--check", str(p)]).returncode == 0


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_uses_public_names_only(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        tree = ast.parse(c.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("convlens"):
                assert not any(part.startswith("_") for part in node.module.split(".")), node.module
                assert not any(a.name.startswith("_") for a in node.names), ast.unparse(node)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                pytest.fail(f"{path.name}: private attribute {ast.unparse(node)}")


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("CONVLENS_DATA", str(DATA))          # the kernel inherits the environment
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    t0 = time.perf_counter()
    nb = execute(path, tmp_path)
    TIMES[path.name] = time.perf_counter() - t0
    outs = _outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    shown = [o for o in outs if o.output_type in ("display_data", "execute_result")]
    if not any("image/png" in o.data for o in shown):
        said = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stdout")
        if "SKIPPED:" in said:  # a lesson on the course's data, run where ../shared/data is absent
            pytest.skip(f"{path.name}: " + said[said.index("SKIPPED:"):].splitlines()[0][:200])
        pytest.fail(f"{path.name}: no convlens figure was shown inline")
    stderr = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr, stderr
    if importlib.util.find_spec("ipywidgets") is not None:  # with it, progress bars (rich, tqdm) draw as widgets
        text = stderr + "".join(str(o.get("data", {}).get("text/plain", "")) for o in shown)
        assert "ipywidgets" not in text, f"{path.name}: a progress bar still asks for ipywidgets"
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote into docs/notebooks"


def test_tables_render_as_html():
    """The results that are tables show as HTML in a notebook (the layer table, a prediction)."""
    import torch
    from torch import nn

    import convlens as cl

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for p in net[0].parameters():
        p.requires_grad_(False)
    lm = cl.load_model(net, input_size=(1, 12, 12), mean=(0.5,), std=(0.5,), class_names=["cat", "<dog>"])
    html = lm.layers()._repr_html_()
    assert "<table>" in html and "(None, 4, 10, 10)" in html and "Non-trainable params: 40" in html
    assert html.count("<tr>") == 1 + len(lm.layers().rows)
    pred = lm.predict(torch.zeros(1, 12, 12).numpy(), top_k=2)[0]
    html = pred._repr_html_()
    assert "&lt;dog&gt;" in html and "<dog>" not in html  # escaped
    assert html.count("<tr>") == 3 and "%" in html


def test_html_table_escapes_and_aligns():
    from convlens.view import html_table

    out = html_table(["a", "n"], [["<b>", 12345], ["x", 0.5]], caption="c&d", footer=["total <3>"], indent=[0, 2])
    assert "&lt;b&gt;" in out and "<b><b>" not in out
    assert '<td style="text-align:right">12,345</td>' in out and ">0.5<" in out
    assert "c&amp;d" in out and "total &lt;3&gt;" in out and "padding-left:2.9em" in out


@pytest.fixture(scope="module", autouse=True)
def _report_times(request):
    """Print how long each executed notebook took (also with output captured)."""
    yield
    if TIMES:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        line = "notebook times: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items())
        if reporter is not None:
            reporter.write_line(line)
