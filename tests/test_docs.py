"""The API reference (`make docs`): built from the docstrings with --strict, so a docstring that
mkdocstrings cannot render (a broken cross-reference, an object that moved) fails the suite."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra (mkdocs, mkdocstrings[python])")

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["index", "models", "seeing-inside", "where-it-looks", "training", "reports", "errors"]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=600)


def test_api_reference_builds_without_warnings(tmp_path):
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "WARNING" not in log, log
    for page in PAGES:
        assert (tmp_path / "site" / f"{page}.html").is_file(), page
    html = {page: (tmp_path / "site" / f"{page}.html").read_text() for page in PAGES}
    # each verb is rendered from its docstring where a reader looks for it, with its sections
    for page, anchors in {
        "models": ["convlens.models.load_model", "convlens.models.LensModel",
                   "convlens.models.labels.read_class_names"],
        "seeing-inside": ["convlens.lens.journey.journey", "convlens.lens.featurevis.visualize",
                          "convlens.lens.filters.filters", "convlens.lens.kernels.apply_kernel"],
        "where-it-looks": ["convlens.lens.cam.explain", "convlens.lens.score.score", "convlens.lens.sanity.sanity",
                           "convlens.audit.verb.audit", "convlens.lens.factorize.factorize",
                           "convlens.lens.cam.Softmax"],
        "training": ["convlens.train.train", "convlens.train.evaluate.evaluate", "convlens.train.compare.compare",
                     "convlens.data.load_source", "convlens.data.ImageSet"],
        "reports": ["convlens.report.report", "convlens.web.create_app"],
        "errors": ["convlens.errors.ConvlensError", "convlens.errors.SpecError"],
    }.items():
        for anchor in anchors:
            assert f'id="{anchor}"' in html[page], (page, anchor)
    # Sphinx roles in docstrings are links (or code), never raw ":func:" text
    for page in PAGES:
        assert not re.search(r":(func|meth|class|mod|data|attr):`", html[page]), page
    assert 'href="models.html#convlens.models.load_model"' in html["where-it-looks"]
    where = html["where-it-looks"]
    start = where.index('id="convlens.lens.score.score"')
    score_doc = where[start:where.index('id="convlens.lens.score.Scores"')]
    for section in ("Parameters:", "Returns:", "Raises:"):
        assert section in score_doc, section


def test_a_warning_fails_the_build(tmp_path):
    """The same configuration turns a broken reference into a failed build (strict is on)."""
    docs = tmp_path / "docs" / "api"
    shutil.copytree(ROOT / "docs" / "api", docs)
    (docs / "errors.md").write_text("# Errors\n\n::: convlens.errors.NoSuchError\n")
    config = tmp_path / "mkdocs.yml"
    text = (ROOT / "mkdocs.yml").read_text().replace("paths: [.]", f"paths: [{ROOT}]")
    text = text.replace("- docs/griffe_roles.py", f"- {ROOT / 'docs' / 'griffe_roles.py'}")
    config.write_text(text)
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "NoSuchError" in done.stdout + done.stderr
