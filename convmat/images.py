"""Images <-> columns: the bridge between ``(N, C, *spatial)`` arrays and ``Y = C @ X``.

One column of ``X`` per sample, each the C-order ravel of that sample:
``X[:, i] = x[i].ravel()``.  Works on NumPy and CuPy arrays and torch tensors
alike (only ``reshape`` and ``.T``), keeps them on their device, and returns
views where the layout allows.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ParameterError, ParameterTypeError
from .geometry import normalize_shape

__all__ = ["images_to_columns", "columns_to_images"]


def _refuse_matrix(a, name):
    """numpy.matrix stays 2-D under reshape: refuse it, naming the parameter."""
    if isinstance(a, np.matrix):
        raise ParameterTypeError(name, f"{name} must be an array, not numpy.matrix (it always has 2 axes); "
                        f"pass numpy.asarray({name})")


def images_to_columns(x, shape=None):
    """Stack images as columns.

    Parameters
    ----------
    x : array, shape (N, C, *spatial) or (C, *spatial)
        A batch, or one unbatched image when ``shape`` says so.
    shape : tuple of int, optional
        The per-sample shape ``(C, *spatial)``.  Without it ``x`` is a batch;
        with it, ``x`` of ``len(shape)`` axes is one image (one column).

    Returns
    -------
    array, shape (C * prod(spatial), N)
        A view of ``x`` where possible (``X[:, i] = x[i].ravel()``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(8.0).reshape(2, 1, 2, 2)
    >>> images_to_columns(x)
    array([[0., 4.],
           [1., 5.],
           [2., 6.],
           [3., 7.]])
    >>> images_to_columns(x[0], shape=(1, 2, 2)).shape
    (4, 1)
    """
    if not hasattr(x, "shape") or not hasattr(x, "reshape"):
        raise ParameterTypeError("x", f"x must be an array of shape (N, C, *spatial), got {type(x).__name__}")
    _refuse_matrix(x, "x")
    if shape is not None:
        shape = normalize_shape(shape, "shape")
        if tuple(x.shape) == shape:
            return x.reshape(1, -1).T
        if tuple(x.shape[1:]) != shape:
            raise ParameterError(
                "x", f"x must have shape {shape} (one image) or (N, *{shape}) (a batch), got {tuple(x.shape)}"
            )
    elif x.ndim < 3:
        raise ParameterError(
            "x", f"x must have shape (N, C, *spatial) with at least one spatial axis, got {tuple(x.shape)}; "
            f"pass shape=(C, *spatial) for one unbatched image"
        )
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).T


def columns_to_images(Y, shape):
    """Turn columns back into images.

    Parameters
    ----------
    Y : array, shape (C * prod(spatial), N) or (C * prod(spatial),)
        Dense columns (one per sample) or a single vector.
    shape : tuple of int
        ``(C, *spatial)`` of one sample.

    Returns
    -------
    array, shape (N, C, *spatial)

    Examples
    --------
    >>> import numpy as np
    >>> columns_to_images(np.arange(4.0), (1, 2, 2)).shape
    (1, 1, 2, 2)
    """
    shape = normalize_shape(shape, "shape")
    if not hasattr(Y, "shape") or not hasattr(Y, "reshape") or hasattr(Y, "toarray"):
        raise ParameterTypeError("Y", f"Y must be a dense array (use .toarray() on a sparse result), got {type(Y).__name__}")
    _refuse_matrix(Y, "Y")
    size = math.prod(shape)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape[0] != size:
        raise ParameterError(
            "Y", f"Y must have shape ({size}, N) or ({size},) for images of shape {shape}, got {tuple(Y.shape)}"
        )
    return Y.T.reshape((Y.shape[1],) + shape)
