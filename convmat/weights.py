"""Weights: checked, converted and packed on the host for the value fill.

A weight is tiny next to its matrix, so it is always prepared on the host in
NumPy (:func:`convmat.backends.to_host_weight` brings it there from any
library) and moved to the backend's device once packed.
"""

from __future__ import annotations

import numpy as np

from .backends import default_device, get_backend, to_host_weight
from .errors import ParameterError, ParameterTypeError

__all__ = [
    "VALUE_DTYPES",
    "as_host_weight",
    "backend_and_weight",
    "check_weight_shape",
    "matrix_weight",
    "value_dtype",
    "weight_shape_of",
]

#: dtypes a matrix may hold.
VALUE_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128))


_ALLOWED = ", ".join(str(t) for t in VALUE_DTYPES)


def value_dtype(weight_dtype, dtype) -> np.dtype:
    """The dtype of the matrix values, or a TypeError that lists what is allowed.

    Examples
    --------
    >>> value_dtype(np.dtype(np.int16), None)
    dtype('float64')
    """
    allowed = _ALLOWED
    weight_dtype = np.dtype(weight_dtype).newbyteorder("=")
    if dtype is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ParameterTypeError("dtype", f"dtype must be one of {allowed}, got {dtype!r}") from None
        if dt not in VALUE_DTYPES:
            raise ParameterTypeError("dtype", f"dtype must be one of {allowed}, got {dtype!r}")
        if weight_dtype.kind == "c" and dt.kind != "c":
            raise ParameterTypeError("dtype", f"dtype {dt} would drop the imaginary part of a {weight_dtype} weight")
        return dt
    if weight_dtype in VALUE_DTYPES:
        return weight_dtype
    if weight_dtype.kind in "biu":
        return np.dtype(np.float64)
    raise ParameterTypeError(
        "weight", f"weight dtype must be one of {allowed} (or integer), got {weight_dtype}; convert it first"
    )


def weight_shape_of(weight, name: str = "weight") -> tuple[int, ...]:
    """The shape of an array of any library, or a TypeError naming ``name``."""
    shape = getattr(weight, "shape", None)
    if shape is None:
        raise ParameterTypeError(name, f"{name} must be an array, got {type(weight).__name__}")
    return tuple(int(v) for v in shape)


def as_host_weight(weight, be=None, name: str = "weight") -> np.ndarray:
    """The weight as a native-byte-order NumPy array of numbers (no copy for a native NumPy array).

    Big-endian arrays are converted; object, string and boolean arrays are a
    TypeError naming ``name``.

    Examples
    --------
    >>> as_host_weight(np.ones(2, dtype=">f8")).dtype.byteorder in "=|"
    True
    """
    arr = to_host_weight(weight, be, name)
    if arr.dtype == object or arr.dtype.kind not in "biufc":
        got = f"dtype {arr.dtype}" if hasattr(weight, "dtype") else f"{weight!r:.80}"
        raise ParameterTypeError(name, f"{name} must be an array of numbers, got {got}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def backend_and_weight(backend, device, weight):
    """The backend (on the torch weight's device by default) and the weight on the host."""
    be = get_backend(backend, default_device(backend, weight) if device is None else device)
    return be, as_host_weight(weight, be)


def check_weight_shape(shape, expected, transposed: bool) -> None:
    """A ValueError naming ``weight`` unless ``shape == expected``."""
    if tuple(shape) != tuple(expected):
        layout = "(C_in, C_out/groups, *kernel_size)" if transposed else "(C_out, C_in/groups, *kernel_size)"
        raise ParameterError("weight", f"weight must have shape {tuple(expected)} {layout} for this plan, got {tuple(shape)}")


def matrix_weight(weight, dtype, flip: bool, groups: int, transposed: bool) -> np.ndarray:
    """Weight as ``(row channels, col channels per group * prod(k + 1))``, zero-padded.

    The zero after each kernel axis is what the sentinel tap ``k`` of a
    merged entry reads (see :mod:`convmat.pattern`).  A transposed plan's
    weight ``(C_in, C_out/g, *k)`` has its channel axes swapped within each
    group, so both read ``(row channel, in-group column channel, *k)``.
    """
    w = np.asarray(weight)
    ndim = w.ndim - 2
    if flip:
        w = w[(Ellipsis,) + (slice(None, None, -1),) * ndim]
    if transposed:
        cin, cog = w.shape[:2]
        w = w.reshape((groups, cin // groups, cog) + w.shape[2:])
        w = np.swapaxes(w, 1, 2).reshape((groups * cog, cin // groups) + w.shape[3:])
    padded = np.zeros(w.shape[:2] + tuple(k + 1 for k in w.shape[2:]), dtype=dtype)
    padded[(slice(None), slice(None)) + tuple(slice(0, k) for k in w.shape[2:])] = w
    return padded.reshape(w.shape[0], -1)
