"""The backend boundary: library branches live in the convmat/backends/ package only.

Every other module works through :class:`convmat.backends.Backend` methods,
so adding a library (or fixing how one is spelled) touches one file.  This
test reads the source of every module (AST, no import) and fails when a
module outside ``backends/``

* imports an array library (``torch``, ``cupy``, ``cupyx``),
* compares anything with a library name (``lib == "torch"``,
  ``name in ("numpy", "cupy")``), or
* compares a backend's name (``be.name == ...``).

The few modules that use a library for its own sake, not as a branch (the
PyTorch oracle of ``check_geometry``; the torch autograd functions), are
listed in ``ALLOWED`` with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "convmat"
LIBRARIES = {"torch", "cupy", "cupyx", "numpy", "scipy", "jax"}
IMPORT_FLAGGED = {"torch", "cupy", "cupyx", "jax"}

#: module (relative to convmat/) -> {library: why it may import it}
ALLOWED = {
    "backends/": {"*": "the one home of library branches (every module of the package)"},
    "checks.py": {"torch": "PyTorch is check_geometry's independent oracle (forward, autograd adjoint, conv_transpose)"},
    "torch_autograd.py": {"torch": "torch.autograd.Function subclasses for the 'torch' backend"},
    "dask.py": {"numpy": "its out='numpy' / out='dask' option names the kind of result asked for, not a branch"},
}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _strings(elt)


def _is_backend_name(node) -> bool:
    """``be.name``, ``backend.name``, ``self._be.name``..."""
    if not (isinstance(node, ast.Attribute) and node.attr == "name"):
        return False
    base = node.value
    label = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
    return label.lstrip("_") in {"be", "backend", "bk"}


def violations(source: str, rel: str) -> list[str]:
    """The boundary violations in the source of module ``rel`` (a path relative to convmat/)."""
    allowed = ALLOWED.get(rel) or ALLOWED.get(rel.partition("/")[0] + "/", {})
    if "*" in allowed:
        return []
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in IMPORT_FLAGGED and top not in allowed:
                    found.append(f"{rel}:{node.lineno}: imports {name}")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            libs = {s for side in sides for s in _strings(side)} & LIBRARIES
            if libs - set(allowed):
                found.append(f"{rel}:{node.lineno}: compares with library name(s) {sorted(libs)}")
            if any(_is_backend_name(side) for side in sides):
                found.append(f"{rel}:{node.lineno}: compares a backend's name")
    return found


def test_allowed_modules_exist():
    # A stale allow-list entry would silently permit a future module of that name.
    for rel in ALLOWED:
        assert (PACKAGE / rel).exists(), f"ALLOWED names {rel}, which no longer exists"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_library_branches_outside_backends(path):
    assert violations(path.read_text(), path.relative_to(PACKAGE).as_posix()) == []


def test_the_scanner_sees_each_kind_of_branch():
    # The check itself can fail: one violation of each kind, each reported once.
    src = 'import torch\nif lib == "cupy":\n    pass\nif be.name != "x":\n    pass\nif self._be.name in names:\n    pass\n'
    found = violations(src, "probe.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "imports torch",
        "compares with library name(s) ['cupy']",
        "compares a backend's name",
        "compares a backend's name",
    ]
    assert violations(src, "backends/torch_backend.py") == []
