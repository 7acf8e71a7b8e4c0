"""Parameters -> per-axis values: the normalisers every public function shares.

One normaliser per kind of argument turns "int or tuple or pairs or string"
into per-axis ints, checks lengths and ranges, and names the parameter in a
:class:`~convmat.errors.ParameterError` (a ValueError) or
:class:`~convmat.errors.ParameterTypeError` (a TypeError) with ``.parameter``.
Integers, NumPy integers and 0-d integer arrays are ints; values beyond
``MAX_INT`` are absurd sizes and are refused.  The kernel extent
``e = d(k-1) + 1`` lives here because the string paddings need it;
:mod:`convmat.geometry` re-exports everything.
"""

from __future__ import annotations

import numbers
import operator

from .errors import ParameterError, ParameterTypeError

__all__ = [
    "MAX_INT",
    "PADDING_MODES",
    "PADDING_STRINGS",
    "as_int",
    "extent",
    "normalize_padding",
    "normalize_padding_mode",
    "normalize_per_axis",
    "normalize_shape",
    "positive_int",
]

#: The largest size, stride, dilation, padding or channel count accepted: past it a
#: size is absurd (no index of an int64 could address the matrix) and is refused.
MAX_INT = 2**62

#: The padding modes, as PyTorch names them.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

#: The string paddings, with what each means (one table, one wording).
PADDING_STRINGS = {
    "valid": "no padding",
    "same": "output size ceil(n / stride); total padding max((o-1)s + e - n, 0), "
    "the odd sample on the high side (PyTorch and TensorFlow)",
    "full": "e - 1 on both sides (every partial overlap)",
}


# --------------------------------------------------------------------------- #
# normalisers
# --------------------------------------------------------------------------- #
def as_int(value, name: str) -> int:
    """Return ``value`` as a Python int, or raise a TypeError naming ``name``.

    Integers, NumPy integer scalars and 0-d integer arrays are accepted;
    a value beyond ``MAX_INT`` in size is an absurd size (a ValueError).

    Examples
    --------
    >>> import numpy as np
    >>> as_int(np.array(2), "stride")
    2
    """
    if type(value) is int and -MAX_INT <= value <= MAX_INT:  # the common case, without the ABC check
        return value
    integral = isinstance(value, numbers.Integral) or (
        getattr(value, "ndim", None) == 0 and getattr(getattr(value, "dtype", None), "kind", "") in "iu"
    )
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b" or not integral:
        raise ParameterTypeError(
            name, f"{name} must be an integer, got {value!r:.80} of type {type(value).__name__}"
        )
    out = operator.index(value)
    if abs(out) > MAX_INT:
        raise ParameterError(name, f"{name} must be at most 2**62 in size, got {out!r:.40}")
    return out


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (groups, threads, trials, channels, max_nnz...), or an error naming ``name``.

    Examples
    --------
    >>> positive_int(4, "threads")
    4
    """
    out = as_int(value, name)
    if out < 1:
        raise ParameterError(name, f"{name} must be >= 1, got {value!r}")
    return out


def _is_sequence(value) -> bool:
    return isinstance(value, (tuple, list)) or (
        hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes))
        and getattr(value, "ndim", 1) != 0  # a 0-d array is a scalar
    )


def normalize_per_axis(value, name: str, ndim: int, *, minimum: int | None = None) -> tuple[int, ...]:
    """Turn an int or a sequence of ``ndim`` ints into a tuple of ``ndim`` ints.

    Examples
    --------
    >>> normalize_per_axis(2, "stride", 3)
    (2, 2, 2)
    >>> normalize_per_axis((1, 2), "stride", 2)
    (1, 2)
    """
    if _is_sequence(value):
        items = tuple(value)
        if len(items) != ndim:
            raise ParameterError(
                name,
                f"{name} must be an int or have {ndim} entries (one per spatial axis), got {value!r}"
            )
        try:
            out = tuple(as_int(v, name) for v in items)
        except TypeError:
            raise ParameterTypeError(name, f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    else:
        try:
            out = (as_int(value, name),) * ndim
        except TypeError:
            raise ParameterTypeError(name, f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    if minimum is not None and any(v < minimum for v in out):
        raise ParameterError(name, f"{name} must be >= {minimum} on every axis, got {value!r}")
    return out


def normalize_shape(shape, name: str) -> tuple[int, ...]:
    """A spatial shape: a sequence of positive ints (an int means one axis)."""
    if not _is_sequence(shape):
        try:
            shape = (as_int(shape, name),)
        except TypeError:
            raise ParameterTypeError(name, f"{name} must be a sequence of positive ints, got {shape!r}") from None
    try:
        out = tuple(as_int(v, name) for v in shape)
    except TypeError:
        raise ParameterTypeError(name, f"{name} must be a sequence of positive ints, got {shape!r}") from None
    if len(out) == 0:
        raise ParameterError(name, f"{name} must have at least one spatial axis, got {shape!r}")
    if any(v < 1 for v in out):
        raise ParameterError(name, f"{name} must contain positive sizes, got {shape!r}")
    return out


def normalize_padding_mode(padding_mode) -> str:
    if not isinstance(padding_mode, str):
        raise ParameterTypeError("padding_mode", f"padding_mode must be a string, one of {PADDING_MODES}, got {padding_mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ParameterError("padding_mode", f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def _string_padding(name: str, n: int, s: int, e: int) -> tuple[int, int]:
    """(lo, hi) for one axis and one string padding (see PADDING_STRINGS)."""
    if name == "valid":
        return 0, 0
    if name == "full":
        return e - 1, e - 1
    # 'same': TensorFlow's rule, which is PyTorch's for stride 1.
    o = -(-n // s)
    total = max((o - 1) * s + e - n, 0)
    return total // 2, total - total // 2


def normalize_padding(
    padding,
    ndim: int,
    *,
    in_shape,
    kernel_size,
    stride,
    dilation,
    allow_strings: bool = True,
    allow_negative: bool = False,
) -> tuple[tuple[int, int], ...]:
    """Turn any accepted padding into one ``(lo, hi)`` pair per axis.

    Accepted: an int; one int per axis; one ``(lo, hi)`` pair per axis;
    ``'valid'``, ``'same'`` or ``'full'`` (see ``PADDING_STRINGS``).
    Negative values (cropping) only with ``allow_negative``.

    Examples
    --------
    >>> normalize_padding(1, 2, in_shape=(4, 4), kernel_size=(3, 3), stride=(1, 1), dilation=(1, 1))
    ((1, 1), (1, 1))
    >>> normalize_padding("same", 1, in_shape=(5,), kernel_size=(4,), stride=(1,), dilation=(1,))
    ((1, 2),)
    """
    if isinstance(padding, str):
        if not allow_strings:
            raise ParameterError(
                "padding",
                f"padding must be an int, one int per axis or one (lo, hi) pair per axis for a "
                f"transposed convolution, got {padding!r}"
            )
        if padding not in PADDING_STRINGS:
            raise ParameterError(
                "padding",
                f"padding must be an int, a sequence, or one of {tuple(PADDING_STRINGS)}, got {padding!r}"
            )
        return tuple(
            _string_padding(padding, n, s, extent(k, d))
            for n, k, s, d in zip(in_shape, kernel_size, stride, dilation)
        )
    allowed = f"an int, {ndim} ints, {ndim} (lo, hi) pairs" + (
        f" or one of {tuple(PADDING_STRINGS)}" if allow_strings else ""
    )
    if _is_sequence(padding):
        items = tuple(padding)
        if len(items) != ndim:
            raise ParameterError("padding", f"padding must be {allowed} (one per spatial axis), got {padding!r}")
        pairs = []
        for item in items:
            if _is_sequence(item):
                pair = tuple(item)
                if len(pair) != 2:
                    raise ParameterError("padding", f"padding must be {allowed}; the entry {item!r} is not a (lo, hi) pair")
                try:
                    pairs.append((as_int(pair[0], "padding"), as_int(pair[1], "padding")))
                except TypeError:
                    raise ParameterTypeError("padding", f"padding must be {allowed}, got {padding!r}") from None
            else:
                try:
                    v = as_int(item, "padding")
                except TypeError:
                    raise ParameterTypeError("padding", f"padding must be {allowed}, got {padding!r}") from None
                pairs.append((v, v))
    else:
        try:
            v = as_int(padding, "padding")
        except TypeError:
            raise ParameterTypeError("padding", f"padding must be {allowed}, got {padding!r}") from None
        pairs = [(v, v)] * ndim
    if not allow_negative and any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ParameterError("padding", f"padding must be >= 0 on every side, got {padding!r}")
    return tuple(pairs)


def extent(k: int, d: int) -> int:
    """The effective extent ``e = d(k-1) + 1`` of a kernel of ``k`` taps with dilation ``d``.

    The one home of this formula; every other place asks it.

    Examples
    --------
    >>> extent(3, 2)
    5
    """
    return d * (k - 1) + 1
