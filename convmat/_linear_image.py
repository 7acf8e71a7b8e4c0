"""LinearImageOperator: a SciPy LinearOperator on flat columns that also applies to images.

The base of :class:`convmat.ConvOperator`: everything that follows from "a
linear map ``C`` between images of shapes ``in_shape`` and ``out_shape``,
plus a bias".  A subclass provides

* ``_product(X, adjoint)``: ``C @ X`` or ``C^H @ X`` for columns ``X`` of its
  backend (1-D or 2-D);
* ``in_shape``, ``out_shape``, ``shape``, ``dtype``, ``bias`` (or None),
  ``is_adjoint``, ``_be`` (its :class:`~convmat.backends.Backend`) and ``_H``
  (the adjoint view, whose ``_H`` is the operator).

Two conventions, kept apart by name:

* SciPy's, on flat columns ``v = x.ravel()``: ``A @ v``, ``matvec``,
  ``rmatvec``, ``matmat``, ``rmatmat``; ``A.H``/``A.adjoint()`` and
  ``A.T``/``A.transpose()`` return operators.  The linear part only.
* images: ``A.apply(x)`` (also ``A(x)``) adds the bias, ``A.apply_adjoint(y)``
  applies ``C^H``.  A layer with one input channel also takes one channel-less
  image; with one output channel it then returns one.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _operator_parts as parts

__all__ = ["LinearImageOperator"]


class LinearImageOperator(LinearOperator):
    """A LinearOperator on columns of images that also applies to images (see the module docstring)."""

    def _flat(self, x, name, ndims, adjoint):
        """Checked columns: ``x`` of shape ``(n,)``/``(n, 1)`` (``ndims=1``) or ``(n, k)`` (``ndims=2``)."""
        n = self.shape[0] if adjoint else self.shape[1]
        X = parts.operand(self._be, x, name)
        parts.check_flat(X, n, name, ndims, self.out_shape if adjoint else self.in_shape)
        return self._product(X, adjoint != self.is_adjoint)

    def matvec(self, x):
        return self._flat(x, "x", 1, False)

    def rmatvec(self, x):
        return self._flat(x, "x", 1, True)

    def matmat(self, X):
        return self._flat(X, "X", 2, False)

    def rmatmat(self, X):
        return self._flat(X, "X", 2, True)

    _matvec, _rmatvec, _matmat, _rmatmat = matvec, rmatvec, matmat, rmatmat

    def dot(self, x):
        """``A @ x``: an operator for a LinearOperator or a scalar, ``C @ x`` for columns ``(n,)``/``(n, k)``."""
        if isinstance(x, LinearOperator) or np.isscalar(x):
            return super().dot(x)
        ndim = getattr(x, "ndim", None)
        return self._flat(x, "x", 1 if ndim == 1 else 2, False)

    def _adjoint(self):
        return self._H

    def _transpose(self):
        return self._H if self.dtype.kind != "c" else super()._transpose()

    # ------------------------------------------------------------------ #
    # images
    # ------------------------------------------------------------------ #
    def apply(self, x):
        """Apply the layer to images: ``C @ x`` plus the bias.

        Parameters
        ----------
        x : array, shape (N, *in_shape), in_shape, or spatial when in_shape[0] == 1
            A batch ``(N, C_in, *spatial)``, one image ``(C_in, *spatial)``, or
            (one input channel) one channel-less image ``spatial``.

        Returns
        -------
        array, shape (N, *out_shape), out_shape, or out_shape[1:]
            Batched exactly when ``x`` is; channel-less when ``x`` is and the
            layer has one output channel.  On the operator's backend and device.

        Examples
        --------
        >>> import numpy as np
        >>> from convmat import ConvOperator
        >>> A = ConvOperator(np.ones((2, 1, 2)), (3,), bias=np.array([0.0, 10.0]))
        >>> A.apply(np.ones((4, 1, 3))).shape
        (4, 2, 2)
        >>> A(np.ones(3))                        # channel-less input, two output channels
        array([[ 2.,  2.],
               [12., 12.]])
        """
        X, form = parts.image_columns(self._be, x, self.in_shape, "x")
        y = parts.columns_to_images(self._product(X, self.is_adjoint), self.out_shape, "batch")
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * (len(self.out_shape) - 1))
        return parts.unbatch(y, form)

    __call__ = apply

    def apply_adjoint(self, y):
        """Apply the adjoint of the linear part to images, ``C^H @ y`` (``C.T @ y`` for real weights).

        The bias is not involved.  For ``padding_mode='zeros'`` this is the
        transposed convolution; for the other modes it also folds the padded
        border back onto the image.

        Parameters
        ----------
        y : array, shape (N, *out_shape), out_shape, or spatial when out_shape[0] == 1

        Returns
        -------
        array, shape (N, *in_shape), in_shape, or in_shape[1:]

        Examples
        --------
        >>> import numpy as np
        >>> from convmat import ConvOperator
        >>> A = ConvOperator(np.ones((1, 1, 2)), (3,), padding=1, padding_mode="circular")
        >>> A.apply_adjoint(np.array([1.0, 0.0, 0.0, 0.0]))
        array([1., 0., 1.])
        """
        Y, form = parts.image_columns(self._be, y, self.out_shape, "y")
        x = parts.columns_to_images(self._product(Y, not self.is_adjoint), self.in_shape, "batch")
        return parts.unbatch(x, form)
