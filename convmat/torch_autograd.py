"""PyTorch autograd for :class:`convmat.ConvOperator` on the ``'torch'`` backend.

Imported (with torch) only when a product must be recorded: an operand that
requires grad, or an operator built from a weight that requires grad.  The
product ``Y = C @ X`` (or ``C^H @ Y``) runs convmat's sparse product; the
backward pass computes

* the input gradient with the other product: ``dX = C^H @ dY`` (``C @ dY``
  for the adjoint);
* the weight gradient through the pattern.  Write ``M(w)`` for the matrix of
  the forward geometry (``C = M`` for a convolution, ``C = M^T`` for a
  transposed one).  With ``U`` the unfold matrix of that geometry for one
  channel (row ``(t, j)``, column ``u``: the input sample that tap ``t`` of
  output ``j`` reads, through the padding mode), ``M(w) x`` is
  ``W_g @ (U x)`` per group, so
  ``dL/dw[c_out, c, t] = sum_{j, n} dY[c_out, j, n] (U x)[t, j, c, n]``.
  ``U`` is built by convmat's builder from the plan's geometry (a one-channel
  convolution whose ``K`` output channels are the ``K`` taps, with one-hot
  kernels) the first time it is needed, then kept.  For ``C = M^T`` (or an
  adjoint) the roles of the two sides swap: ``<dY, M^T x> = <M dY, x>``.

The weight enters the graph as the tensor the operator was built from: an
operator whose weight was modified in place afterwards refuses to run (its
matrix holds the old values).  :class:`ConvMatLayer` is the ``nn.Module``
that rebuilds its operator when its weight changes (after an optimizer step).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .build import conv_plan

__all__ = ["differentiable_product", "version_of", "ConvMatmul", "ConvMatLayer"]


def version_of(t) -> int:
    """The in-place version counter of a tensor."""
    return int(t._version)


def _unfold_matrix(op):
    """``U`` (K * prod(out), prod(in)) of the operator's forward geometry, one channel (built once, kept)."""
    shared = op._shared
    if shared.get("unfold") is None:
        g = op.plan.geometry
        K = math.prod(g.kernel_size)
        onehot = np.eye(K, dtype=op.dtype).reshape((K, 1) + tuple(g.kernel_size))
        plan = conv_plan(
            onehot.shape, g.in_shape, stride=g.stride, padding=g.padding, dilation=g.dilation,
            padding_mode=g.padding_mode,
        )
        shared["unfold"] = plan.build(onehot, backend=op.backend)
    return shared["unfold"]


def weight_gradient(op, inp, out_grad):
    """``d<out_grad, M(w) inp>/dw`` for the forward geometry's matrix ``M``: shape ``plan.weight_shape``.

    ``inp`` has ``in_channels * prod(in)`` rows, ``out_grad`` ``out_channels * prod(out)``.
    """
    g = op.plan.geometry
    K, I, O = math.prod(g.kernel_size), math.prod(g.in_shape), math.prod(g.out_shape)
    G, cin_g, cout_g = g.groups, g.in_channels // g.groups, g.out_channels // g.groups
    N = inp.shape[1] if inp.ndim == 2 else 1
    cols = inp.reshape(g.in_channels, I, N).permute(1, 0, 2).reshape(I, g.in_channels * N)
    UX = op.backend.matmul(_unfold_matrix(op), cols).reshape(K, O, G, cin_g, N)
    dY = out_grad.reshape(G, cout_g, O, N).to(UX.dtype)
    grad = torch.einsum("gaon,kogbn->gabk", dY, UX)
    return grad.reshape(op.plan.weight_shape)


class ConvMatmul(torch.autograd.Function):
    """``op`` applied to columns ``X`` (``adjoint``: ``C^H``), differentiable in ``X`` and ``weight``."""

    @staticmethod
    def forward(X, weight, op, adjoint):
        """``C @ X`` (``C^H @ X`` when ``adjoint``) by the operator's own product; ``weight`` only links the graph."""
        return op._raw_product(X, adjoint)

    @staticmethod
    def setup_context(ctx, inputs, output):
        """Keep the operator, the direction and (when the weight needs a gradient) ``X``."""
        X, weight, op, adjoint = inputs
        ctx.op, ctx.adjoint, ctx.x_dtype = op, adjoint, X.dtype
        ctx.save_for_backward(X if weight is not None and weight.requires_grad else None)

    @staticmethod
    def backward(ctx, dY):
        """``dX = C^H dY`` (``C dY`` for the adjoint) and ``dW`` gathered through the pattern."""
        op, adjoint = ctx.op, ctx.adjoint
        (X,) = ctx.saved_tensors
        dX = dW = None
        if ctx.needs_input_grad[0]:
            dX = op._raw_product(dY, not adjoint).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            X2 = X if X.ndim == 2 else X[:, None]
            G2 = dY if dY.ndim == 2 else dY[:, None]
            # C = M (forward plan) or M^T (transposed plan); C^H of either swaps again.
            swap = op.plan.transposed != adjoint
            dW = weight_gradient(op, G2, X2) if swap else weight_gradient(op, X2, G2)
            dW = dW.to(op._shared["grad_weight"].dtype)
        return dX, dW, None, None


def differentiable_product(op, X, adjoint):
    """``C @ X`` or ``C^H @ X`` recorded for autograd (X and/or the operator's weight require grad)."""
    w = op._shared["grad_weight"]
    if w is not None and version_of(w) != op._shared["weight_version"]:
        raise RuntimeError(
            f"the weight of this ConvOperator was modified in place after the operator was built (version "
            f"{op._shared['weight_version']} -> {version_of(w)}); its matrix holds the old values: build a new "
            f"ConvOperator from the updated weight"
        )
    Y = ConvMatmul.apply(X, w, op, adjoint)
    return Y


class ConvMatLayer(torch.nn.Module):
    """A ``torch.nn.Module`` whose forward pass is a :class:`convmat.ConvOperator` on backend ``'torch'``.

    The weight (and bias) are ``nn.Parameter``; the explicit matrix is rebuilt
    on the first forward after the weight changed (an optimizer step), and
    reused otherwise.

    Parameters
    ----------
    plan : ConvPlan
        The geometry (:func:`convmat.conv_plan`, :func:`convmat.conv_transpose_plan`).
    weight : torch.Tensor, shape plan.weight_shape
        Copied into a parameter (real dtypes).
    bias : torch.Tensor, shape (C_out,), optional

    Examples
    --------
    >>> import torch
    >>> from convmat import conv_plan
    >>> layer = ConvMatLayer(conv_plan((2, 1, 3, 3), (5, 5), padding=1), torch.ones(2, 1, 3, 3))
    >>> layer(torch.ones(4, 1, 5, 5)).shape
    torch.Size([4, 2, 5, 5])
    """

    def __init__(self, plan, weight, bias=None):
        super().__init__()
        self.plan = plan
        self.weight = torch.nn.Parameter(torch.as_tensor(weight).detach().clone())
        self.bias = None if bias is None else torch.nn.Parameter(torch.as_tensor(bias).detach().clone())
        self._op = None
        self._key = None

    def operator(self):
        """The ConvOperator of the current weight and bias (rebuilt only when they changed)."""
        from .operator import ConvOperator

        key = (version_of(self.weight), None if self.bias is None else version_of(self.bias), self.weight.device)
        if self._op is None or key != self._key:
            self._op = ConvOperator.from_plan(
                self.plan, self.weight, bias=self.bias, backend="torch", device=self.weight.device
            )
            self._key = key
        return self._op

    def forward(self, x):
        return self.operator()(x)

    def extra_repr(self) -> str:
        return repr(self.plan).splitlines()[0]
