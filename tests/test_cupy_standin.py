"""The 'cupy' backend's code, run against a NumPy-backed stand-in for CuPy.

No CUDA device is available to this project, so real CuPy cannot run here
(tests/test_backends.py runs the real thing where a device is present).  This
test executes every line of :class:`convmat.backends.CupyBackend` -- device
handling, array creation, the gather and add into buffers, the cupyx CSR
matrix, int32-only indices, free-memory checks, the operator, ``.to()``, the
adjoint test -- against a minimal stand-in with CuPy's spelling of the same
calls, so that a misspelt call or a wrong signature in that glue fails here.
It proves nothing about CuPy's own behaviour on a GPU.

The stand-in lives in a temporary directory and runs in a subprocess, so
this test process never sees a module called ``cupy``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

CUPY = '''
"""Stand-in for CuPy: NumPy arrays of a subclass whose module is 'cupy' (one fake device)."""
import numpy as _np


class ndarray(_np.ndarray):
    @property
    def device(self):
        return cuda.Device(0)

    def get(self):
        return _np.array(self)


ndarray.__module__ = "cupy"


def _w(a):
    return _np.asarray(a).view(ndarray)


def empty(n, dtype=None):
    return _w(_np.empty(n, dtype=dtype))


def zeros(n, dtype=None):
    return _w(_np.zeros(n, dtype=dtype))


def arange(n, dtype=None):
    return _w(_np.arange(n, dtype=dtype))


def asarray(a, dtype=None):
    return _w(_np.array(a, dtype=dtype))


def asnumpy(a):
    return _np.array(a)


def take(a, indices, axis=None, out=None):
    return _np.take(a, indices, axis=axis, out=out)


def add(a, b, out=None):
    return _np.add(a, b, out=out)


def bincount(x, minlength=0):
    return _w(_np.bincount(x, minlength=minlength))


class cuda:
    class runtime:
        class CUDARuntimeError(RuntimeError):
            pass

        @staticmethod
        def getDeviceCount():
            return 1

        @staticmethod
        def memGetInfo():
            return (8 << 30, 16 << 30)

    class Device:
        def __init__(self, device=0):
            self.id = device

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
'''

CUPYX_SPARSE = '''
"""Stand-in for cupyx.scipy.sparse: scipy's csr_matrix whose products return stand-in arrays."""
import numpy as _np
import scipy.sparse as _sp

import cupy


class csr_matrix(_sp.csr_matrix):
    def __init__(self, arg, shape=None, copy=False):
        super().__init__(arg, shape=shape, copy=copy)
        self.data, self.indices, self.indptr = (cupy._w(a) for a in (self.data, self.indices, self.indptr))

    def __matmul__(self, other):
        assert isinstance(other, cupy.ndarray), type(other)
        return cupy._w(super().__matmul__(other))

    def toarray(self):
        return cupy._w(super().toarray())


csr_matrix.__module__ = "cupyx.scipy.sparse._csr"


def issparse(A):
    return _sp.issparse(A)
'''

CUPYX_LINALG = '''
from scipy.sparse.linalg import LinearOperator  # noqa: F401
'''

SCRIPT = r'''
import sys
import numpy as np
import scipy.sparse as sp
import convmat
from convmat import ConvOperator, MatrixTooLargeError, adjoint_test, conv_matrix, conv_plan
from convmat.backends import get_backend
import cupy

be = get_backend("cupy")
assert be.device == 0 and be.index_dtypes == (np.dtype(np.int32),) and be.memory_limit() == 8 << 30
rng = np.random.default_rng(0)

# the builder on the stand-in: the same arrays as scipy's
for kw in [dict(padding=1, stride=2, groups=2, padding_mode="reflect"), dict(padding=((2, 0), (1, 1)), dilation=2)]:
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    M, R = conv_matrix(w, (9, 8), backend="cupy", **kw), conv_matrix(w, (9, 8), **kw)
    assert type(M).__name__ == "csr_matrix" and type(M).__module__.startswith("cupyx")
    assert isinstance(M.data, cupy.ndarray) and isinstance(M.indices, cupy.ndarray) and isinstance(M.indptr, cupy.ndarray)
    assert M.indices.dtype == np.int32 and M.has_canonical_format
    for a, b in [(M.data, R.data), (M.indices, R.indices), (M.indptr, R.indptr)]:
        np.testing.assert_array_equal(cupy.asnumpy(a), b)
P = convmat.padding_matrix((5, 6), 2, mode="circular", channels=2, backend="cupy")
assert isinstance(P.indices, cupy.ndarray)
assert (sp.csr_matrix(P) != convmat.padding_matrix((5, 6), 2, mode="circular", channels=2)).nnz == 0

# weights may be CuPy arrays; the operator keeps everything on the device
w = rng.standard_normal((3, 2, 3, 3))
A = ConvOperator(w, (7, 7), padding=1, bias=np.arange(3.0))
B = ConvOperator(cupy.asarray(w), (7, 7), padding=1, bias=cupy.asarray(np.arange(3.0)), backend="cupy")
x = rng.standard_normal((2, 2, 7, 7))
y = rng.standard_normal((2, 3, 7, 7))
for got, ref in [(B(cupy.asarray(x)), A(x)), (B.apply_adjoint(cupy.asarray(y)), A.apply_adjoint(y)), (B.T(cupy.asarray(y)), A.T(y))]:
    assert isinstance(got, cupy.ndarray), type(got)
    np.testing.assert_allclose(cupy.asnumpy(got), ref, rtol=1e-12, atol=1e-12)
r = adjoint_test(B)
assert r.passed and abs(r.tolerance / adjoint_test(A).tolerance - 1) < 0.05  # measured noise, other product
assert adjoint_test(B.matrix).passed  # a cupyx matrix on its own
L = B.as_linear_operator()
assert L.shape == A.shape
assert "cupy, device 0" in repr(B)

# mixing is refused with the way out; moving is explicit
for call in (lambda: B(x), lambda: A(cupy.asarray(x))):
    try:
        call()
    except TypeError as exc:
        assert "cupy" in str(exc) and ("move" in str(exc) or ".get()" in str(exc)), exc
    else:
        raise AssertionError("mixed operands were accepted")
C = A.to("cupy")
assert C.backend == be and isinstance(C.matrix.data, cupy.ndarray)
np.testing.assert_allclose(cupy.asnumpy(C(cupy.asarray(x))), A(x), rtol=1e-12)
assert (C.to("scipy").matrix != A.matrix).nnz == 0
try:
    conv_matrix(cupy.asarray(w), (7, 7))
except TypeError as exc:
    assert "weight is a CuPy array" in str(exc)
else:
    raise AssertionError("a CuPy weight was accepted by backend 'scipy'")

# int32 only: refused with the size before allocating; row blocks that fit are built
plan = conv_plan((64, 64, 3, 3), (1024, 1024), padding=1)
try:
    plan.build(np.zeros(plan.weight_shape, np.float32), backend="cupy")
except MatrixTooLargeError as exc:
    assert "takes int32 indices only" in str(exc) and f"{plan.nnz:,}" in str(exc) and "row_blocks" in str(exc)
else:
    raise AssertionError("a matrix past 2**31 non-zeros was accepted by backend 'cupy'")
small = conv_plan((2, 2, 3, 3), (6, 6), padding=1)
blocks = list(small.row_blocks(max_nnz=100))
parts = [small.build(np.ones(small.weight_shape), rows=b, backend="cupy") for b in blocks]
full = sp.vstack([sp.csr_matrix(p) for p in parts])
assert (full != small.build(np.ones(small.weight_shape))).nnz == 0
try:
    get_backend("cupy", 3)
except ValueError as exc:
    assert "device must be a CUDA device number in [0, 1)" in str(exc)
else:
    raise AssertionError
print("OK")
'''


def test_cupy_backend_glue_against_a_stand_in(tmp_path):
    pkg = tmp_path / "cupy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(CUPY))
    sparse = tmp_path / "cupyx" / "scipy" / "sparse"
    (sparse / "linalg").mkdir(parents=True)
    for d in (tmp_path / "cupyx", tmp_path / "cupyx" / "scipy"):
        (d / "__init__.py").write_text("")
    (sparse / "__init__.py").write_text(textwrap.dedent(CUPYX_SPARSE))
    (sparse / "linalg" / "__init__.py").write_text(CUPYX_LINALG)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")

