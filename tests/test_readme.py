"""The README's Python examples run, and print what their comments promise."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of the README (up to the next ``## ``)."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def _promised(code: str) -> list[str]:
    """What each ``print(...)`` line promises: the True/False words of its comment, else None (a small number)."""
    out = []
    for line in code.splitlines():
        if line.lstrip().startswith("print("):
            said = line.split("#", 1)[1].strip() if "#" in line else ""
            words = re.match(r"((?:True|False)(?: (?:True|False))*)", said)
            out.append(words.group(1) if words else None)
    return out


@pytest.mark.parametrize("index", range(len(_blocks("In Python"))))
def test_in_python_examples_run_and_keep_their_promises(index):
    code = _blocks("In Python")[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, f"README.md block {index}", "exec"), {})
    printed = buf.getvalue().splitlines()
    promised = _promised(code)
    assert len(printed) == len(promised)
    for got, want in zip(printed, promised):
        if want is not None:
            assert got == want
        else:  # '~5e-15'-style comments: a small number
            assert float(got) < 1e-10


def test_the_readme_has_the_examples():
    assert len(_blocks("In Python")) == 2
    assert "adjoint_test(f, g" in _blocks("In Python")[1]
