"""The adjoint (dot-product) test, for any linear operator of any array library.

:func:`adjoint_test` checks ``<A x, y> = <x, A^H y>`` for matrices (SciPy,
cupyx, torch; sparse or dense), :class:`~convmat.operator.ConvOperator`,
anything with ``matvec``/``rmatvec`` or ``forward``/``adjoint`` (SciPy and
PyLops operators) and plain pairs of callables, on the library, device and
dtype the operator works with.  Its tolerance comes from the rounding noise the
operator shows on the test vectors themselves, so it needs no knowledge of the
sparsity, and every result says which errors it could have seen
(:attr:`AdjointTestResult.resolution`).

Library specifics (dtypes, devices, array types) are asked of
:mod:`convmat.backends`; nothing here branches on the library.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .backends import array_library, dtype_backend, get_backend, line_nnz, matrix_backend, matrix_vector
from .geometry import positive_int
from .operator import ConvOperator

__all__ = ["AdjointTestResult", "AdjointTestWarning", "adjoint_test"]

#: ``c`` in the tolerance: the safety factor over the measured rounding bound (see :func:`adjoint_test`).
SAFETY_FACTOR = 4.0
#: ``s`` of the rounding probe ``A(s x)``: not a power of two, so that ``s x`` rounds.
PROBE_SCALE = 0.7
#: A passing run whose resolution is worse than this warns: single precision (and below), double.
RESOLUTION_LIMITS = {"single": 1e-3, "double": 1e-10}


class AdjointTestWarning(UserWarning):
    """A passing adjoint test that could not have seen errors of the size one expects to catch."""


@dataclass(frozen=True, eq=False)
class AdjointTestResult:
    """The outcome of :func:`adjoint_test`.

    Attributes
    ----------
    passed : bool
        Every product finite and ``max_error <= tolerance``.
    max_error : float
        The largest normalised error over the trials (inf when a product is not finite).
    tolerance : float
        The bound on ``max_error`` that rounding explains (or ``rtol``).
    resolution : float
        The smallest relative error of the adjoint (a scale error ``A^H -> (1 + d) A^H``)
        that every trial of this run would have detected: ``tolerance * max_i D_i / |rhs_i|``.
    dtype : numpy.dtype
        The dtype of the test vectors ``x`` (the operator's own).
    lhs, rhs : ndarray, shape (trials,)
        ``<A x_i, y_i>`` and ``<x_i, A^H y_i>`` in float64/complex128 (inf if beyond its range).
    errors : ndarray, shape (trials,)
        ``|lhs - rhs| / D`` with ``D = ||A x|| ||y|| + ||x|| ||A^H y||``.
    noise : (float, float)
        The measured relative rounding noise of the forward and adjoint products.
    shape : (int, int)
        The operator's shape ``(m, n)``.
    row_length : int or None
        Most non-zeros in a row or column of an explicit matrix (None for black boxes).
    library : str
        The backend and device of the test vectors (``"torch, device cpu"``).
    """

    passed: bool
    max_error: float
    tolerance: float
    resolution: float
    dtype: np.dtype
    lhs: np.ndarray
    rhs: np.ndarray
    errors: np.ndarray
    noise: tuple
    shape: tuple
    row_length: int | None
    library: str

    @property
    def trials(self) -> int:
        return int(self.lhs.shape[0])

    def summary(self) -> str:
        """The verdict, the resolution, and both inner products and the error of each trial."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"adjoint test {verdict}: max error {self.max_error:.3e} "
            f"{'<=' if self.passed else '>'} tolerance {self.tolerance:.3e}, resolution {self.resolution:.2e} "
            f"({self.dtype}, shape {self.shape}, {self.library}, {self.trials} trials)",
            f"  rounding noise of A x: {self.noise[0]:.2e}, of A^H y: {self.noise[1]:.2e} (relative)",
            f"  {'trial':>5}  {'<A x, y>':>24}  {'<x, A^H y>':>24}  {'error':>9}",
        ]
        for i, (lhs, rhs, err) in enumerate(zip(self.lhs, self.rhs, self.errors)):
            lines.append(f"  {i:>5}  {_fmt(lhs):>24}  {_fmt(rhs):>24}  {err:9.2e}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AdjointTestResult(\n{self.summary()}\n)"

    __str__ = summary


def _fmt(z) -> str:
    if np.iscomplexobj(z):
        return f"{z.real:.10e}{z.imag:+.2e}j"
    return f"{float(z):.16e}"


# --- one side of the test: an operator reduced to "apply to a flat vector" ---
@dataclass(frozen=True)
class _Side:
    name: str  # for messages: "A", "AT", "function 'f'"
    src: tuple  # the shape the callable takes
    dst: tuple  # the shape it must return
    dtype: np.dtype  # the dtype of its input vectors
    call: object
    backend: object
    row_length: int | None = None

    @property
    def shape(self):
        return (math.prod(self.dst), math.prod(self.src))

    def __call__(self, v):
        be = self.backend
        v = v.reshape(self.src)
        try:
            out = self.call(v)
        except Exception as exc:
            kind = type(exc) if type(exc).__module__ == "builtins" else RuntimeError
            raise kind(
                f"{self.name} raised {type(exc).__name__} on an input of shape {self.src} and dtype {self.dtype} "
                f"of backend {be.name!r} (another library: pass backend= or its dtype=): {exc}"
            ) from exc
        out = be.operand(out, f"the result of {self.name}")
        if math.prod(tuple(out.shape)) != self.shape[0]:
            raise ValueError(
                f"{self.name} must return shape {self.dst} ({self.shape[0]} values) for an input of shape "
                f"{self.src}, got shape {tuple(out.shape)}"
            )
        return out.reshape(-1)


def _matrix_side(A, name, adjoint, be) -> _Side:
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(A.shape)}")
    M = be.transpose(A) if adjoint else A
    k = line_nnz(be, A) if be.is_sparse(A) else max(A.shape)
    m, n = (int(s) for s in M.shape)
    return _Side(name, (n,), (m,), be.dtype_of(M), lambda v: be.asarray(matrix_vector(be, M, v)), be, k)


def _dtype_of(obj, dtype, name):
    """(NumPy dtype, backend name or None) of ``dtype=``, else of ``obj.dtype``, else float64."""
    given = dtype if dtype is not None else getattr(obj, "dtype", None)
    if given is None:
        return np.dtype(np.float64), None
    try:
        dt, lib = dtype_backend(given)
    except TypeError:
        raise TypeError(f"dtype of {name} must be a NumPy, CuPy or torch dtype, got {given!r}") from None
    return (dt if dt.kind in "fc" else np.dtype(np.float64)), lib


def _side(A, name, *, adjoint, backend, device, in_shape, out_shape, dtype) -> _Side:
    """``A`` (``A^H`` when ``adjoint``) as a _Side; a TypeError for anything that is not an operator."""
    if isinstance(A, ConvOperator):
        op = A.H if adjoint else A
        k = max(A.plan.max_row_nnz(), A.plan.transpose().max_row_nnz(), 1)
        m, n = op.shape
        return _Side(name, (n,), (m,), np.dtype(op.dtype), lambda v: op @ v, op.backend, k)
    be = matrix_backend(A)
    if be is not None:
        return _matrix_side(A, name, adjoint, be)
    dt, lib = _dtype_of(A, dtype, name)
    dev = device if device is not None else getattr(A, "device", None)
    be = get_backend(backend or lib or "scipy", None if dev is None else dev)
    shape = getattr(A, "shape", None)
    if hasattr(A, "matvec") and hasattr(A, "rmatvec") and shape is not None:
        m, n = (int(s) for s in shape)
        src, dst = ((m,), (n,)) if adjoint else ((n,), (m,))
        return _Side(f"{name}.{'rmatvec' if adjoint else 'matvec'}", src, dst, dt, A.rmatvec if adjoint else A.matvec, be)
    if hasattr(A, "forward") and hasattr(A, "adjoint"):
        ins = in_shape if in_shape is not None else getattr(A, "in_shape", None)
        outs = out_shape if out_shape is not None else getattr(A, "out_shape", None)
        if ins is None or outs is None:
            if shape is None:
                raise TypeError(
                    f"{name} has forward/adjoint but neither in_shape/out_shape nor shape, so the test cannot draw "
                    "vectors; pass in_shape= and out_shape="
                )
            outs, ins = ((int(shape[0]),), (int(shape[1]),))
        ins, outs = tuple(ins), tuple(outs)
        src, dst = (outs, ins) if adjoint else (ins, outs)
        return _Side(f"{name}.{'adjoint' if adjoint else 'forward'}", src, dst, dt, A.adjoint if adjoint else A.forward, be)
    raise TypeError(
        f"{name} must be a sparse matrix (scipy, cupyx or torch), a 2-D array, a ConvOperator, a LinearOperator, "
        f"an object with matvec/rmatvec or forward/adjoint, or a callable with its adjoint callable, "
        f"got {type(A).__name__}"
    )


def _function_side(fn, role, src, dst, dtype, be) -> _Side:
    return _Side(f"{role} function {getattr(fn, '__qualname__', None) or type(fn).__name__!r}", src, dst, dtype, fn, be)


def _is_operator(A) -> bool:
    return (
        isinstance(A, ConvOperator)
        or array_library(A) is not None
        or (hasattr(A, "matvec") and hasattr(A, "rmatvec"))
        or (hasattr(A, "forward") and hasattr(A, "adjoint"))
    )


def _check_shape(shape, name):
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape if not isinstance(s, bool) and int(s) == s and s >= 1)
        ok = len(out) == len(tuple(shape)) and len(out) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a tuple of positive ints, got {shape!r}")
    return out


# --- overflow- and underflow-safe norms and inner products ---
def _scaled(v, be):
    """``(v * 2**-e, e)`` in float64/complex128 with ``max |v * 2**-e|`` in [0.5, 1); e = None if v is not finite."""
    v = be.astype(v, np.complex128 if be.dtype_of(v).kind == "c" else np.float64)
    top = float(abs(v).max().item())
    if not math.isfinite(top):
        return v, None
    if top == 0.0:
        return v, 0
    e = math.frexp(top)[1]
    return _pow2(v, -e), e


def _pow2(v, k):
    """``v * 2**k``, in steps of at most ``2**60`` so that no factor overflows the dtype of ``v`` (exact)."""
    while k:
        step = max(-60, min(60, k))
        v = v * 2.0**step
        k -= step
    return v


def _nrm(v) -> float:
    a = abs(v)
    return math.sqrt((a * a).sum().item())


def _dot(u, v):
    """``sum(conj(u) * v)`` on the vectors' own device (NumPy: pairwise summation)."""
    return (u.conj() * v).sum().item()


def _ldexp(z, e):
    """``z * 2**e`` for real or complex z; +-inf where it overflows float64."""
    def one(t):
        try:
            return math.ldexp(t, e)
        except OverflowError:
            return math.copysign(math.inf, t)

    return complex(one(z.real), one(z.imag)) if isinstance(z, complex) else one(float(z))


def _vector(rng, n, dtype, be):
    v = rng.standard_normal(n)
    if dtype.kind == "c":
        v = v + 1j * rng.standard_normal(n)
    return be.asarray(v.astype(dtype))


def adjoint_test(
    A, AT=None, *, trials=5, rng=None, rtol=None, backend=None, device=None, in_shape=None, out_shape=None, dtype=None
) -> AdjointTestResult:
    """The dot-product test: is ``AT`` the adjoint of ``A``?

    Parameters
    ----------
    A : matrix, ConvOperator, LinearOperator, operator-like, or callable
        A sparse matrix (SciPy, cupyx, torch) or 2-D array; a ConvOperator
        (its linear part, no bias); anything with ``matvec``/``rmatvec`` and
        ``shape`` (SciPy, PyLops); anything with ``forward``/``adjoint`` (and
        ``in_shape``/``out_shape``, or ``shape``); or a function ``f`` that maps
        arrays of shape ``in_shape`` to arrays of shape ``out_shape``.
    AT : same kinds, optional
        The claimed adjoint, applied forwards (``AT @ y``, ``AT.matvec(y)``,
        ``AT.forward(y)`` or ``AT(y)``).  Defaults to ``A``'s own adjoint.
        Required when ``A`` is a plain function: ``adjoint_test(f, g, ...)``.
    trials : int >= 1
        Independent pairs ``(x, y)``; the test passes when every trial passes.
    rng : None, int or numpy.random.Generator
        Seed of the random vectors (None: seed 0, so that the test is deterministic).
    rtol : float, optional
        Override the tolerance on the normalised error (see Notes); must be > 0.
    backend : {'scipy', 'cupy', 'torch'} or Backend, optional
        The library of the vectors handed to a black box.  By default the one
        its ``dtype`` belongs to (a ``torch.dtype`` means torch), else NumPy.
        Matrices and ConvOperators always get vectors of their own library and device.
    device : optional
        The device of a black box's vectors (default: its ``device`` attribute, else the library's default).
    in_shape, out_shape : tuple of int, optional
        The shapes a function (or a forward/adjoint object) takes and returns.
    dtype : NumPy, CuPy or torch dtype, optional
        The dtype of a black box's vectors (default: its ``dtype`` attribute,
        else float64).  Never widened: a ``torch.float32`` operator gets float32 tensors.

    Returns
    -------
    AdjointTestResult
        ``.passed``, ``.max_error``, ``.tolerance``, ``.resolution``, and the
        inner products ``.lhs = <A x, y>`` and ``.rhs = <x, A^H y>`` per trial.

    Warns
    -----
    AdjointTestWarning
        A passing run whose resolution is worse than 1e-3 (single precision) or 1e-10 (double).

    Notes
    -----
    Shapes: ``A`` maps ``n`` values to ``m``.  Each trial draws ``x`` with
    standard normal entries (complex normal for complex dtypes) and a
    standard normal ``r``, and correlates ``y`` with ``A x``:

    .. math:: y = \\sqrt{m}\\,\\frac{A x}{\\|A x\\|} + r, \\qquad
              e = \\frac{|\\langle A x, y\\rangle - \\langle x, A^H y\\rangle|}
                         {\\|A x\\|\\,\\|y\\| + \\|x\\|\\,\\|A^H y\\|} .

    With independent ``x`` and ``y`` the inner product is about ``sqrt(m)``
    times smaller than its Cauchy--Schwarz bound ``D`` (the denominator), so a
    scale error ``d`` of the adjoint moves ``e`` by only ``d / sqrt(m)``; with
    ``y`` correlated, ``<A x, y> ~ ||A x||^2`` and ``e ~ d / 3`` whatever ``m``.
    The random part ``r`` keeps every direction of ``y`` in the test.

    The tolerance is measured, not assumed.  The computed products are
    ``A x + f`` and ``A^H y + a`` with rounding errors ``f`` and ``a``, so by
    Cauchy--Schwarz ``|lhs - rhs| <= ||f|| ||y|| + ||x|| ||a||`` whatever the
    algorithm, sparsity or summation order.  On the first trial the test also
    applies both operators to ``s x`` and ``s y`` (``s = 0.7``, which rounds),
    and takes the rounding noise from the defect of linearity,
    ``||f|| ~ ||A(s x) - s A x|| / s`` (likewise ``||a||``), which contains
    each product's own rounding (and the rounding of ``s x``) at least once.
    With ``c = 4`` and the float64 accumulation of the inner products,

    .. math:: \\mathrm{tol} = c \\left( \\frac{\\|f\\|\\,\\|y\\| + \\|x\\|\\,\\|a\\|}{D}
              + \\varepsilon \\right) + 10 \\sqrt{\\max(m, n)}\\,\\varepsilon_{64},

    ``eps`` being the machine epsilon of the operator's dtype.  Rounding errors
    are nearly orthogonal to ``y``, so correct operators stay about
    ``sqrt(m)`` times below the bound.  A scale error ``d`` is detected by a
    trial when ``|d| |rhs| > tol D``, hence the resolution
    ``tol max_i D_i / |rhs_i|`` (about ``3 tol``).

    Norms and inner products are accumulated in float64 (complex128) on
    copies scaled by powers of two, so they neither overflow nor underflow;
    a NaN or inf in any product fails the test.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import conv_matrix
    >>> C = conv_matrix(np.arange(9.0).reshape(1, 1, 3, 3), (16, 16), padding=1)
    >>> adjoint_test(C).passed
    True
    >>> result = adjoint_test(C, 1.0001 * C.T)   # the adjoint scaled by 1 + 1e-4
    >>> result.passed, result.resolution < 1e-10
    (False, True)
    >>> f = lambda x: np.cumsum(x)                # a function pair: cumulative sum and its adjoint
    >>> g = lambda y: np.cumsum(y[::-1])[::-1]
    >>> adjoint_test(f, g, in_shape=(100,), out_shape=(100,), dtype=np.float32).passed
    True
    """
    trials = positive_int(trials, "trials")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float, np.integer, np.floating))
                             or not 0 < rtol < math.inf):
        raise ValueError(f"rtol must be a positive finite number or None, got {rtol!r}")
    rng = 0 if rng is None else rng
    if not isinstance(rng, np.random.Generator) and (isinstance(rng, bool) or not isinstance(rng, (int, np.integer))):
        raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")
    in_shape, out_shape = _check_shape(in_shape, "in_shape"), _check_shape(out_shape, "out_shape")
    kw = dict(backend=backend, device=device, in_shape=in_shape, out_shape=out_shape, dtype=dtype)
    if callable(A) and not _is_operator(A):  # a pair of functions
        if AT is None or not callable(AT) or in_shape is None or out_shape is None:
            raise TypeError(
                "a function A needs its adjoint function and both shapes: adjoint_test(f, g, in_shape=..., "
                f"out_shape=..., dtype=...), got AT={AT!r}, in_shape={in_shape!r}, out_shape={out_shape!r}"
            )
        dt, lib = _dtype_of(None, dtype, "the functions")
        be = get_backend(backend or lib or "scipy", device)
        fwd = _function_side(A, "forward", in_shape, out_shape, dt, be)
    else:
        fwd = _side(A, "A", adjoint=False, **kw)
    if AT is None:
        adj = _side(A, "A", adjoint=True, **kw)
    elif callable(AT) and not _is_operator(AT):
        adj = _function_side(AT, "adjoint", fwd.dst, fwd.src, fwd.dtype, fwd.backend)
    else:
        adj = _side(AT, "AT", adjoint=False, **dict(kw, in_shape=out_shape, out_shape=in_shape))
    if fwd.backend != adj.backend:
        raise TypeError(
            f"A and AT must take vectors of the same library and device, got {fwd.backend!r} and {adj.backend!r}"
        )
    be = fwd.backend
    m, n = fwd.shape
    if adj.shape != (n, m):
        raise ValueError(f"AT must have shape {(n, m)} (the transpose of A's {(m, n)}), got {adj.shape}")
    return _run(fwd, adj, be, np.random.default_rng(rng), trials, rtol)


def _run(fwd, adj, be, rng, trials, rtol) -> AdjointTestResult:
    m, n = fwd.shape
    eps = max(float(np.finfo(fwd.dtype).eps), float(np.finfo(adj.dtype).eps))
    floor = SAFETY_FACTOR * eps + 10.0 * math.sqrt(max(m, n)) * float(np.finfo(np.float64).eps)
    rows, noise, finite, tol = [], (0.0, 0.0), True, rtol
    for trial in range(trials):
        x = _vector(rng, n, fwd.dtype, be)
        r = _vector(rng, m, adj.dtype, be)
        Ax = fwd(x)
        a, ea = _scaled(Ax, be)
        if ea is None:
            finite = False
            break
        na = _nrm(a)
        y = _pow2(be.astype(Ax, adj.dtype), -ea) * (math.sqrt(m) / na if na > 0 else 0.0) + r
        ATy = adj(y)
        (xs, ex), (ys, ey), (b, eb) = _scaled(x, be), _scaled(y, be), _scaled(ATy, be)
        if ey is None or eb is None:
            finite = False
            break
        nx, ny, nb = _nrm(xs), _nrm(ys), _nrm(b)
        lhs, rhs = _dot(a, ys), _dot(xs, b)
        top = max(ea + ey, ex + eb)
        L, R = _ldexp(lhs, ea + ey - top), _ldexp(rhs, ex + eb - top)
        D = _ldexp(na * ny, ea + ey - top) + _ldexp(nx * nb, ex + eb - top)
        diff = abs(L - R)
        err = diff / D if D > 0 else (0.0 if diff == 0 else math.inf)
        if trial == 0:
            # the rounding noise: defects of linearity A(s x) - s A x and A^H(s y) - s A^H y
            nf, fin_f = _defect(fwd, x, a, ea, be)
            nadj, fin_a = _defect(adj, y, b, eb, be)
            if not (fin_f and fin_a):
                finite = False
                break
            bound = (_ldexp(nf * ny, ea + ey - top) + _ldexp(nx * nadj, ex + eb - top)) / D if D > 0 else 0.0
            noise = (nf / na if na > 0 else 0.0, nadj / nb if nb > 0 else 0.0)
            if tol is None:
                tol = SAFETY_FACTOR * bound + floor
        rows.append((_ldexp(lhs, ea + ey), _ldexp(rhs, ex + eb), err, D / abs(R) if R != 0 else math.inf))
    if tol is None:
        tol = floor
    lhs, rhs = (np.array([row[i] for row in rows] or [np.nan]) for i in (0, 1))
    errors = np.array([row[2] for row in rows] + ([] if finite else [math.inf]))
    max_error = float(errors.max()) if np.isfinite(errors).all() else math.inf
    passed = bool(finite and max_error <= tol)
    resolution = float(tol * max(row[3] for row in rows)) if rows and finite else math.inf
    dtype = fwd.dtype
    result = AdjointTestResult(
        passed=passed, max_error=max_error, tolerance=float(tol), resolution=resolution, dtype=np.dtype(dtype),
        lhs=lhs, rhs=rhs, errors=errors, noise=tuple(float(v) for v in noise), shape=(m, n),
        row_length=None if fwd.row_length is None else max(fwd.row_length, adj.row_length or 0),
        library=be.name if be.device is None else f"{be.name}, device {be.device}",
    )
    limit = RESOLUTION_LIMITS["single" if np.finfo(dtype).eps >= np.finfo(np.float32).eps else "double"]
    if passed and resolution > limit:
        warnings.warn(
            f"adjoint test passed, but its resolution {resolution:.2e} is worse than {limit:g} for {dtype}: "
            f"adjoints wrong by less than that would have passed too (rounding noise of A x "
            f"{noise[0]:.1e}, of A^H y {noise[1]:.1e})",
            AdjointTestWarning,
            stacklevel=3,
        )
    return result


def _defect(side, v, pv, ep, be):
    """``||A(s v) - s A v|| / s`` in units of ``2**ep`` (``pv = A v * 2**-ep``), and whether it is finite."""
    p = side(v * PROBE_SCALE)
    p = be.astype(p, np.complex128 if be.dtype_of(p).kind == "c" else np.float64)
    top = float(abs(p).max().item())
    if not math.isfinite(top):
        return math.inf, False
    d = _pow2(p, -ep) - pv * PROBE_SCALE
    return _nrm(d) / PROBE_SCALE, True
