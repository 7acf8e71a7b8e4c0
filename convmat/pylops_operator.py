"""A :class:`convmat.ConvOperator` as an image-shaped PyLops operator (``ConvOperator.to_pylops``).

PyLops is imported only here, by the first ``to_pylops()``.  The operator's
``dims`` is the input image shape and ``dimsd`` the output image shape (the
channel axis dropped when there is one channel, as PyLops' own ``Convolve2D``
takes ``(H, W)`` images); its products are convmat's threaded ones on the
matrix ``C`` (``C^H`` for the adjoint).  See :doc:`/pylops`.
"""

from __future__ import annotations

__all__ = ["ConvPylops"]


def _image_shape(shape):
    return tuple(shape[1:]) if shape[0] == 1 else tuple(shape)


def _pylops():
    try:
        import pylops
    except ImportError as exc:
        raise ImportError("to_pylops needs PyLops: pip install 'convmat[pylops]'") from exc
    return pylops


def ConvPylops(op):
    """The PyLops operator of ``op`` (a :class:`convmat.ConvOperator` on ``'scipy'`` or ``'cupy'``).

    Parameters
    ----------
    op : ConvOperator

    Returns
    -------
    pylops.LinearOperator
        ``dims = op.in_shape`` and ``dimsd = op.out_shape`` (without the
        channel axis for one channel); ``op.H`` gives its adjoint.

    Examples
    --------
    >>> import numpy as np
    >>> from convmat import ConvOperator
    >>> A = ConvOperator(np.ones((1, 1, 3, 3)), (8, 8), padding=1)
    >>> P = A.to_pylops()
    >>> P.dims, P.dimsd, (P @ np.ones((8, 8))).shape
    ((8, 8), (8, 8), (8, 8))
    """
    if not op.backend.scipy_linear_operator and op.backend.autograd:
        raise TypeError("to_pylops takes backends 'scipy' and 'cupy'; move the operator with .to('scipy')")
    pylops = _pylops()

    class _ConvPylops(pylops.LinearOperator):
        def __init__(self, conv):
            self.conv = conv
            super().__init__(
                dtype=conv.dtype, dims=_image_shape(conv.in_shape), dimsd=_image_shape(conv.out_shape),
                clinear=True, explicit=False, name="ConvMat",
            )

        def _matvec(self, x):
            return self.conv._raw_product(x, self.conv.is_adjoint)

        def _rmatvec(self, y):
            return self.conv._raw_product(y, not self.conv.is_adjoint)

        def _matmat(self, X):
            return self.conv._raw_product(X, self.conv.is_adjoint)

        def _rmatmat(self, Y):
            return self.conv._raw_product(Y, not self.conv.is_adjoint)

    _ConvPylops.__name__ = _ConvPylops.__qualname__ = "ConvPylops"
    return _ConvPylops(op)
