"""examples/demo.py (``make demo``) runs, agrees with its references and writes sensible PNGs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def run_demo(out_dir, *extra):
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(out_dir), *extra], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def value(stdout: str, label: str) -> str:
    for line in stdout.splitlines():
        if line.strip().startswith(label):
            return line.strip()[len(label):].strip()
    raise AssertionError(f"no line {label!r} in:\n{stdout}")


def number(text: str) -> float:
    return float(re.match(r"[-+0-9.eE]+", text).group(0))


@pytest.mark.parametrize("reference", ["auto", "numpy"])
def test_demo_matches_its_reference_and_writes_the_pictures(tmp_path, reference):
    Image = pytest.importorskip("PIL.Image")
    out = run_demo(tmp_path, "--reference", reference)

    # y = C @ X and z = T @ Y against torch (or the NumPy loop): float32 rounding only (|y| <~ 2, |z| <~ 5)
    assert number(value(out, "max |C@X - ref|")) < 1e-5
    assert number(value(out, "max |T@Y - ref|")) < 1e-5
    adjoint = value(out, "adjoint <Ca,b> vs <a,Tb>")
    assert float(re.search(r"relative difference ([-+0-9.eE]+)", adjoint).group(1)) < 1e-12
    assert value(out, "T == C.T exactly") == "yes"
    assert value(out, "forward y = C @ X") == "(2, 8, 48, 48)"
    assert value(out, "matrix C").startswith("18,432 x 27,648")
    if reference == "numpy":
        assert value(out, "reference").startswith("NumPy loop")

    expected = {"input.png": ((96, 96), "RGB"), "forward.png": ((4 * 48 + 3 * 2, 2 * 48 + 2), "L"),
                "transposed.png": ((96, 96), "RGB")}
    for name, (size, mode) in expected.items():
        path = tmp_path / name
        assert f"wrote {path}" in out
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == size and im.mode == mode
            lo, hi = im.convert("L").getextrema()
            assert hi - lo > 100  # not blank
