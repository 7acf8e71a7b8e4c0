"""Importing convmat loads NumPy and SciPy only: no torch, cupy, matplotlib, PIL or numba.

Checked in a fresh interpreter (this test process may already have imported
them), through sys.modules, as array-api-compat's test_no_dependencies does.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "cupy", "cupyx", "matplotlib", "PIL", "jax", "tensorflow", "numba")

CODE = """
import json, sys
import convmat
from convmat import conv_matrix, conv_transpose_matrix, conv_plan, images_to_columns
import numpy as np
# using the core API must not pull them in either
C = conv_matrix(np.ones((1, 1, 3, 3)), (4, 4), padding=1)
T = conv_transpose_matrix(np.ones((1, 1, 3)), (4,), stride=2)
repr(conv_plan((1, 1, 3), (8,)))
heavy = %r
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


SUBMODULES = (
    "import convmat.build, convmat.geometry, convmat.pattern, convmat.images, convmat.backends, convmat.spmm"
)


@pytest.mark.parametrize("extra", ["", SUBMODULES], ids=["package", "submodules"])
def test_import_loads_no_heavy_dependency(extra):
    code = extra + "\n" + CODE % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"import convmat loaded {loaded}"


def test_import_has_no_output():
    """No prints or warnings at import time."""
    out = subprocess.run([sys.executable, "-W", "error", "-c", "import convmat"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
