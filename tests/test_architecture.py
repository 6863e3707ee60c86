"""Hold the shape of the house (docs/ARCHITECTURE.md): floors that only look down.

Parses every module's imports with ``ast`` (top-level and inside functions alike) and fails on
- an import that goes up a floor (a view importing a flow, a noun importing a view...);
- a private name (``_x``, not dunder) imported from, or read off, another convlens module;
- an import cycle between modules;
- an import of a convlens module inside a function outside the shells (the CLI imports lazily
  so that ``convlens --help`` starts fast; everywhere else an inner import only hides a cycle).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "convlens"

#: module prefix -> floor (a module belongs to the longest prefix that matches)
FLOORS: dict[str, int] = {
    # ground: arrays in, pictures and files out; knows no result class
    "convlens.errors": 0, "convlens.images": 0, "convlens.render": 0, "convlens.view": 0,
    "convlens._alloc": 0, "convlens._modules": 0, "convlens._threads": 0, "convlens.probe": 0,
    "convlens.options": 0, "convlens.names": 0,
    "convlens.methods": 0,  # the method registry: plain data, read by the CLI without torch
    # nouns
    "convlens.models": 1, "convlens.data": 1,
    # views
    "convlens.lens": 2,
    # flows
    "convlens.train": 3, "convlens.report": 3, "convlens.audit": 3,
    # the facade: the package's lazy exports and the modules kept importable by their old names
    "convlens": 4, "convlens.api": 4, "convlens.kernels": 4,
    # shells
    "convlens.cli": 5, "convlens.web": 5,
}
NAMES = {0: "ground", 1: "nouns", 2: "views", 3: "flows", 4: "facade", 5: "shells"}
SHELLS = ("convlens.cli", "convlens.web")


def floor(module: str) -> int:
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best]


@dataclass
class Imp:
    src: str
    target: str
    names: list[str]
    line: int
    inner: bool


def module_name(path: Path) -> tuple[str, str]:
    """(module, package it resolves relative imports against)."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def modules() -> dict[str, Path]:
    return {module_name(p)[0]: p for p in sorted(PKG.rglob("*.py"))}


ALL = modules()


def resolve(target: str) -> str:
    """The module a dotted import target names (``convlens.models.x`` may be a name in a package)."""
    while target and target not in ALL:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target


def imports_of(path: Path) -> list[Imp]:
    mod, pkg = module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    # imports under `if TYPE_CHECKING:` or try/except at module level count as top level
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    out: list[Imp] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "convlens" and not target.startswith("convlens."):
                continue
            names = [a.name for a in node.names]
            # `from . import x` where x is a submodule: that submodule is the target
            for name in names:
                sub = f"{target}.{name}"
                real = sub if sub in ALL else target
                out.append(Imp(mod, real, [name], node.lineno, id(node) not in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("convlens"):
                    out.append(Imp(mod, a.name, [], node.lineno, id(node) not in top))
    return out


EVERY = [imp for p in ALL.values() for imp in imports_of(p)]


def test_parsed_something():
    assert len(ALL) > 40 and len(EVERY) > 100


def test_no_import_goes_up_a_floor():
    bad = []
    for imp in EVERY:
        target = resolve(imp.target)
        if target == "convlens" and imp.names == ["__version__"]:
            continue  # the package's version is metadata, readable from any floor
        if floor(target) > floor(imp.src):
            bad.append(f"{imp.src}:{imp.line} ({NAMES[floor(imp.src)]}) imports {target} "
                       f"({NAMES[floor(target)]})")
    assert not bad, "imports that go up a floor:\n" + "\n".join(bad)


def test_shells_use_public_names_and_no_private_name_crosses_files():
    bad = []
    for imp in EVERY:
        for name in imp.names:
            if name.startswith("_") and not name.startswith("__"):
                bad.append(f"{imp.src}:{imp.line} imports private {name} from {imp.target}")
    # `module._name` on an imported convlens module
    for mod, path in ALL.items():
        tree = ast.parse(path.read_text())
        _, pkg = module_name(path)
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level or target.startswith("convlens"):
                    for a in node.names:
                        base = ".".join(pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]) if node.level else ""
                        full = ".".join(x for x in (base, target, a.name) if x)
                        if full in ALL:
                            aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("convlens"):
                        aliases.add(a.asname or a.name.split(".")[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__"):
                bad.append(f"{mod}:{node.lineno} reads private {node.value.id}.{node.attr}")
    assert not bad, "private names used across files:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in ALL}
    for imp in EVERY:
        target = resolve(imp.target)
        if target and target != imp.src:
            graph[imp.src].add(target)
    # a package's __init__ re-exporting its own submodules is not a cycle of meaning: drop the
    # edge from a submodule up to its own package's __init__ (it reads names defined below it)
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and ALL[t].name == "__init__.py")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_inner_imports_only_in_the_shells():
    bad = [f"{imp.src}:{imp.line} imports {imp.target} inside a function"
           for imp in EVERY if imp.inner and not imp.src.startswith(SHELLS) and imp.src != "convlens"]
    assert not bad, "inner imports of convlens modules (they hide cycles):\n" + "\n".join(bad)


#: packages split into rooms (issue 31): each room imports only the rooms before it (docs/ARCHITECTURE.md)
ROOMS: dict[str, list[str]] = {
    "convlens.lens.kernels": ["catalogue", "parse", "arithmetic", "result", "apply"],
    "convlens.lens.score": ["metrics", "regions", "result", "verb"],
    "convlens.audit.interventions": ["proposals", "records", "masking", "significance", "findings"],
}


@pytest.mark.parametrize("package", sorted(ROOMS))
def test_rooms_of_a_split_package_import_only_the_rooms_before_them(package):
    rooms = ROOMS[package]
    found = sorted(m.rsplit(".", 1)[1] for m in ALL if m.startswith(package + "."))
    assert found == sorted(rooms), f"{package}: rooms {found}, the architecture note lists {sorted(rooms)}"
    bad = []
    for imp in EVERY:
        target = resolve(imp.target)
        if not imp.src.startswith(package + ".") or not target.startswith(package):
            continue
        src = rooms.index(imp.src.rsplit(".", 1)[1])
        if target == package:
            bad.append(f"{imp.src}:{imp.line} imports its own package's __init__")
        elif rooms.index(target.rsplit(".", 1)[1]) >= src:
            bad.append(f"{imp.src}:{imp.line} imports {target}, a room not before it")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(ALL))
def test_every_module_imports(module):
    import importlib

    importlib.import_module(module)


def test_exported_verbs_stay_verbs_whatever_was_imported_first():
    """`import convlens.train.fit` binds `convlens.train` to the package; the verb must survive it
    (CI once failed with "'module' object is not callable" only in the full, ordered run)."""
    import subprocess
    import sys

    code = (
        "import importlib, convlens as cl\n"
        "mods = " + repr(sorted(ALL)) + "\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = [n for n, (mod, attr) in cl._EXPORTS.items() if attr is not None and not callable(getattr(cl, n))]\n"
        "assert not bad, bad\n"
        "from convlens import train, report\n"
        "assert callable(train) and callable(report) and train.fit.train is cl.train.train\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


#: the public names of the modules split into rooms (issue 31), as they were before the split
KEPT_NAMES = {
    "convlens.audit.interventions": [
        "AFFECTED", "BATCH", "BLOBS", "BOOTSTRAP", "BORDER_BAND", "CONFIDENCE", "CONSTANT", "CONTENT", "CONTROLS",
        "CORNERS", "Candidate", "DENSE", "DISTINCT", "HOLDERS", "MAX_AREA", "MAX_CANDIDATES", "MIN_DROP", "MIN_EFFECT",
        "MIN_PER_CLASS", "NO_EFFECT", "PER_CLASS", "PLAN", "SAME_BOX", "SHARED", "STATISTICS", "Subject", "TABLE",
        "TOTAL", "Verdict", "all_tests", "area", "blobs", "bootstrap", "box_of", "candidates", "measure", "merge",
        "pixel_box", "plan", "sample", "subjects", "verdicts", "write_plan", "write_table"],
    "convlens.models.keras": [
        "HDF5_MAGIC", "INSTALL_HINT", "KERAS_SUFFIXES", "KerasConv2d", "KerasLayer", "KerasNet", "channel_values",
        "import_keras", "is_keras_model", "keras_preprocess", "load_keras_file", "read_class_names",
        "side_class_names", "to_nchw", "to_nhwc", "wrap_keras"],
    "convlens.models.arch": [
        "ACTIVATIONS", "ArchInfo", "BUILTIN", "BUILTIN_ALIASES", "DEFAULT_ARCH", "GRAMMAR", "InputAdapter", "Rescale",
        "SEED_KERAS_ARCH", "SpecNet", "TransferNet", "build_arch", "builtin_module", "check_finite", "check_input",
        "check_spec", "freeze_until", "frozen_modules", "hub_offline", "load_weights", "offline_hint", "parse_arch",
        "read_state_dict", "timm_module", "torchvision_module"],
    "convlens.data.sources": [
        "FACE_LABELS", "FACE_SCALES", "FASHION_CLASSES", "GALLERY_COLS", "GALLERY_LIMIT", "IDX_PARTS", "ImageSet",
        "MNIST_FILES", "MNIST_HOMES", "SOURCE_KINDS", "SizeWarning", "array_source", "cmu_faces_source",
        "digits_source", "fetch_mnist", "folder_source", "load_source", "mnist_source", "parse_size", "pick_images",
        "resize_set", "split_index"],
}


@pytest.mark.parametrize("module", sorted(KEPT_NAMES))
def test_split_modules_keep_their_public_names(module):
    """A module split into a package or into rooms still answers to every public name it had."""
    import importlib

    mod = importlib.import_module(module)
    missing = [name for name in KEPT_NAMES[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"
