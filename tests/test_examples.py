"""Every script in examples/ runs to completion and produces what it promises.

Each example runs in its own subprocess, headless (``MPLBACKEND=Agg``), in a
temporary directory.  A script that takes ``--out DIR`` (found in its source)
gets ``--out tmp_path``; one that draws with matplotlib must then leave at
least one non-empty file there.  Every script must exit 0 and print something
(a table, a check, or where its pictures went).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
TIMEOUT = 120  # seconds per script; each takes a few seconds on a 2-core machine


def test_examples_exist():
    assert SCRIPTS, f"no examples found in {EXAMPLES}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs(name, tmp_path):
    script = EXAMPLES / name
    source = script.read_text(encoding="utf-8")
    takes_out = '"--out"' in source
    draws = "matplotlib" in source
    out_dir = tmp_path / "out"
    cmd = [sys.executable, str(script)] + (["--out", str(out_dir)] if takes_out else [])
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env.pop("DISPLAY", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    report = f"{name} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, report
    assert proc.stdout.strip(), f"{name} printed nothing\n{report}"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in written:
        assert path.stat().st_size > 0, f"{name} wrote an empty file {path.relative_to(tmp_path)}"
    if takes_out and draws:
        assert written, f"{name} accepts --out and uses matplotlib but wrote no file\n{report}"
