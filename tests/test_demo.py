"""examples/demo.py (``make demo``) runs, agrees with its references and writes sensible PNGs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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

    expected = {"input.png": ((96, 96), 960), "forward.png": ((900, 600), 2000),
                "transposed.png": ((1100, 500), 2000)}
    for name, ((min_w, min_h), max_side) in expected.items():
        path = tmp_path / name
        assert f"wrote {path}" in out
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG"
            # large enough to read without zooming, small enough for a screen
            assert im.size[0] >= min_w and im.size[1] >= min_h and max(im.size) <= max_side, (name, im.size)
            lo, hi = im.convert("L").getextrema()
            assert hi - lo > 100  # not blank


def _demo_module():
    spec = importlib.util.spec_from_file_location("convmat_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_pictures_explain_themselves():
    """forward.png names every channel inside the picture; transposed.png says what the checkerboard is and why,
    and the coverage it shows is the matrix's (nnz per row of T), with the period of the stride."""
    pytest.importorskip("matplotlib")
    demo = _demo_module()
    from convmat import conv_transpose_matrix

    rng = np.random.default_rng(0)
    fig = demo.forward_figure(rng.random((8, 48, 48)))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 8
    for c, name in enumerate(demo.CHANNEL_NAMES):
        assert titles[c].startswith(f"channel {c}: {name}\n48×48")

    w = demo.make_weight()
    T = conv_transpose_matrix(w, (48, 48), stride=2, padding=1, output_size=(96, 96))
    cover = demo.coverage(T, w.shape[0], (96, 96))
    # by hand, per axis: input j, tap t writes u = 2j - 1 + t (t = 0, 1, 2), so an even u is written by
    # j = u/2 only and an odd u by j = (u-1)/2 and (u+1)/2 -- except u = 95, whose j = 48 does not exist
    one_d = np.where(np.arange(96) % 2 == 0, 1, 2)
    one_d[95] = 1
    np.testing.assert_array_equal(cover, np.outer(one_d, one_d))
    fig = demo.transposed_figure(rng.random((3, 96, 96)), rng.random((3, 96, 96)), cover)
    caption = fig._supxlabel.get_text()
    assert "checkerboard" in caption and "stride 2" in caption and "1, 2 or 4" in caption
    assert "overlap" in caption.replace("\n", " ")
    assert fig.axes[3].get_title().startswith("inputs writing each pixel")
    assert {t.get_text() for t in fig.axes[3].texts} == {"1", "2", "4"}
