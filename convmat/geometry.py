"""Shape arithmetic: parameters -> validated per-axis geometry.

This module is pure integer code: no arrays, no backends.  It is the only
place where the convolution-arithmetic formulas live; every other module asks
it.  All validation of geometric parameters happens here (with the
normalisers of :mod:`convmat.params`, re-exported here), before anything is
allocated, and every error names the parameter, quotes its value and says
what is allowed.

Per axis (input length ``n``, kernel ``k``, stride ``s``, dilation ``d``,
padding ``(lo, hi)``, extent ``e = d(k-1)+1``):

* forward output ``o = floor((n + lo + hi - e) / s) + 1`` (must be >= 1);
* output ``j``, tap ``t`` reads the virtual input ``u = j*s - lo + t*d``;
* transposed output ``m = (n-1)s - lo - hi + e + a`` (``a`` the output padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ParameterError, ParameterTypeError
from .params import (  # noqa: F401 - re-exported: convmat.geometry is where callers look
    MAX_INT,
    PADDING_MODES,
    PADDING_STRINGS,
    _is_sequence,
    as_int,
    extent,
    normalize_padding,
    normalize_padding_mode,
    normalize_per_axis,
    normalize_shape,
    positive_int,
)

__all__ = [
    "PADDING_MODES",
    "AxisGeometry",
    "ConvGeometry",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "MAX_INT",
    "ParameterError",
    "ParameterTypeError",
    "extent",
    "normalize_per_axis",
    "normalize_padding",
    "output_padding_for",
    "positive_int",
    "restoring_output_padding",
]


# --------------------------------------------------------------------------- #
# per-axis geometry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of a forward convolution (or of the one a transposed convolution transposes).

    ``o`` outputs read ``n`` inputs; output ``j``, tap ``t`` reads the virtual
    input ``u = j*s - lo + t*d``, which ``mode`` maps onto ``[0, n)`` (or drops,
    for ``'zeros'``).  ``o`` is normally ``floor((n + lo + hi + a - e)/s) + 1``.

    ``a`` is the output padding of the transposed convolution whose matrix is
    this geometry's matrix transposed (0 for a forward convolution): the
    transposed convolution maps ``o`` samples to ``n = (o-1)s - lo - hi + e + a``;
    when ``a >= s`` the forward convolution on ``n`` has more than ``o``
    outputs and only the first ``o`` rows are kept.  ``(lo, hi)`` is the
    padding as the convolution was called, never ``hi + a``.
    """

    n: int
    k: int
    s: int
    d: int
    lo: int
    hi: int
    o: int
    mode: str = "zeros"
    a: int = 0

    @property
    def extent(self) -> int:
        """Effective kernel extent ``e = d(k-1) + 1``."""
        return extent(self.k, self.d)

    @property
    def recipe_padding(self) -> tuple[int, int]:
        """``(e-1-lo, e-1-hi+a)``: the padding of the stride-1 convolution in the transposed-conv recipe.

        The transposed convolution equals: insert ``s-1`` zeros between the
        ``o`` samples, pad by this (negative means crop), and correlate with the
        flipped kernel, stride 1, dilation ``d`` (JAX's ``_conv_transpose_padding``).
        """
        e = self.extent
        return (e - 1 - self.lo, e - 1 - self.hi + self.a)


def _forward_length(n, k, s, d, lo, hi) -> int:
    return (n + lo + hi - extent(k, d)) // s + 1


def _check_reach(in_shape, kernel_size, dilation, pads, what="input"):
    for axis, (n, k, d, (lo, hi)) in enumerate(zip(in_shape, kernel_size, dilation, pads)):
        e = extent(k, d)
        if n + lo + hi < e:
            raise ParameterError(
                "kernel_size",
                f"kernel_size {tuple(kernel_size)!r} with dilation {tuple(dilation)!r} reaches {e} samples on "
                f"axis {axis}, more than the padded {what} ({n} + {lo} + {hi} = {n + lo + hi}); "
                f"use a larger {what}, more padding or a smaller kernel"
            )


def _check_mode(mode, in_shape, pads):
    if mode == "reflect":
        for axis, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
            if lo >= n or hi >= n:
                raise ParameterError(
                    "padding",
                    f"padding_mode='reflect' needs padding < input size on every axis, got padding "
                    f"({lo}, {hi}) for size {n} on axis {axis}"
                )
    elif mode == "circular":
        for axis, (n, (lo, hi)) in enumerate(zip(in_shape, pads)):
            if lo > n or hi > n:
                raise ParameterError(
                    "padding",
                    f"padding_mode='circular' needs padding <= input size on every axis (it wraps once), "
                    f"got padding ({lo}, {hi}) for size {n} on axis {axis}"
                )


@dataclass(frozen=True)
class ConvGeometry:
    """A validated forward convolution: channels, groups and one AxisGeometry per axis.

    The matrix of this geometry has ``out_channels * prod(out_shape)`` rows and
    ``in_channels * prod(in_shape)`` columns.  A transposed convolution is the
    transpose of a ConvGeometry (see ``ConvGeometry.for_transpose``).
    """

    in_channels: int
    out_channels: int
    groups: int
    axes: tuple[AxisGeometry, ...]

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(a.n for a in self.axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.o for a in self.axes)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(a.k for a in self.axes)

    @property
    def stride(self) -> tuple[int, ...]:
        return tuple(a.s for a in self.axes)

    @property
    def dilation(self) -> tuple[int, ...]:
        return tuple(a.d for a in self.axes)

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        return tuple((a.lo, a.hi) for a in self.axes)

    @property
    def padding_mode(self) -> str:
        return self.axes[0].mode

    @property
    def output_padding(self) -> tuple[int, ...]:
        """``a`` per axis (see :class:`AxisGeometry`); zeros unless built by :meth:`for_transpose`."""
        return tuple(a.a for a in self.axes)

    @property
    def recipe_padding(self) -> tuple[tuple[int, int], ...]:
        """``(e-1-lo, e-1-hi+a)`` per axis: the padding of the transposed-conv recipe."""
        return tuple(a.recipe_padding for a in self.axes)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the forward matrix ``(C_out*prod(out), C_in*prod(in))``."""
        return (self.out_channels * math.prod(self.out_shape), self.in_channels * math.prod(self.in_shape))

    # ------------------------------------------------------------------ #
    @classmethod
    def forward(
        cls,
        in_shape,
        kernel_size,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        groups: int = 1,
        stride=1,
        padding=0,
        dilation=1,
        padding_mode: str = "zeros",
    ) -> "ConvGeometry":
        """Validate the parameters of a forward convolution."""
        in_shape = normalize_shape(in_shape, "in_shape")
        ndim = len(in_shape)
        kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
        stride = normalize_per_axis(stride, "stride", ndim, minimum=1)
        dilation = normalize_per_axis(dilation, "dilation", ndim, minimum=1)
        mode = normalize_padding_mode(padding_mode)
        _check_channels(in_channels, out_channels, groups)
        pads = normalize_padding(
            padding, ndim, in_shape=in_shape, kernel_size=kernel_size, stride=stride, dilation=dilation
        )
        _check_reach(in_shape, kernel_size, dilation, pads)
        _check_mode(mode, in_shape, pads)
        axes = tuple(
            AxisGeometry(n, k, s, d, lo, hi, _forward_length(n, k, s, d, lo, hi), mode)
            for n, k, s, d, (lo, hi) in zip(in_shape, kernel_size, stride, dilation, pads)
        )
        return _checked(cls(in_channels, out_channels, groups, axes))

    @classmethod
    def for_transpose(
        cls,
        in_shape,
        kernel_size,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        groups: int = 1,
        stride=1,
        padding=0,
        output_padding=0,
        output_size=None,
        dilation=1,
    ) -> "ConvGeometry":
        """The forward geometry whose matrix transposed is the requested transposed convolution.

        ``in_shape`` and ``in_channels`` are those of the transposed convolution's
        input; the forward geometry maps the transposed output (length ``m``)
        back to it, keeping its first ``n`` rows per axis.
        """
        in_shape = normalize_shape(in_shape, "in_shape")
        ndim = len(in_shape)
        kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
        stride = normalize_per_axis(stride, "stride", ndim, minimum=1)
        dilation = normalize_per_axis(dilation, "dilation", ndim, minimum=1)
        _check_channels(in_channels, out_channels, groups)
        pads = normalize_padding(
            padding, ndim, in_shape=in_shape, kernel_size=kernel_size, stride=stride, dilation=dilation,
            allow_strings=False,
        )
        if output_size is not None:
            if _is_nonzero(output_padding):
                raise ParameterError(
                    "output_size",
                    f"give output_size or output_padding, not both (got output_size={output_size!r}, "
                    f"output_padding={output_padding!r})"
                )
            output_padding = output_padding_for(
                output_size, in_shape, kernel_size, stride=stride, padding=pads, dilation=dilation
            )
        out_pad = normalize_per_axis(output_padding, "output_padding", ndim, minimum=0)
        for axis, (a, s, d) in enumerate(zip(out_pad, stride, dilation)):
            if a >= max(s, d):
                raise ParameterError(
                    "output_padding",
                    f"output_padding must be smaller than max(stride, dilation) on every axis, got "
                    f"output_padding={output_padding!r} with stride={stride!r}, dilation={dilation!r} "
                    f"(axis {axis}: {a} >= {max(s, d)})"
                )
        axes = []
        for axis, (n, k, s, d, (lo, hi), a) in enumerate(
            zip(in_shape, kernel_size, stride, dilation, pads, out_pad)
        ):
            m = (n - 1) * s - lo - hi + extent(k, d) + a
            if m < 1:
                raise ParameterError(
                    "padding",
                    f"padding {padding!r} removes everything: the transposed output would have size "
                    f"{m} on axis {axis} (input {n}, kernel {k}, stride {s}, dilation {d}, "
                    f"output_padding {a}); it must be >= 1"
                )
            # The forward convolution on length m with padding (lo, hi + a) has n + a//s outputs;
            # the transposed convolution is its first n rows, transposed.
            axes.append(AxisGeometry(m, k, s, d, lo, hi, n, "zeros", a))
        return _checked(cls(out_channels, in_channels, groups, tuple(axes)))


def _checked(geom: "ConvGeometry") -> "ConvGeometry":
    """``geom``, or a ParameterError if its matrix has more rows or columns than an int64 can count."""
    rows, cols = geom.shape
    if max(rows, cols) > 2**63 - 1:
        big_pad = any(max(ax.lo, ax.hi) > ax.n for ax in geom.axes)
        name, value = ("padding", geom.padding) if big_pad else ("in_shape", geom.in_shape)
        raise ParameterError(
            name,
            f"{name} {value!r} gives a matrix of {rows:.3g} rows and {cols:.3g} columns (channels "
            f"{geom.out_channels} and {geom.in_channels}), more than an int64 can index (2**63 - 1)",
        )
    return geom


def _is_nonzero(value) -> bool:
    if _is_sequence(value):
        return any(v != 0 for v in value)
    return value != 0


def _check_channels(in_channels, out_channels, groups):
    in_channels = as_int(in_channels, "in_channels")
    out_channels = as_int(out_channels, "out_channels")
    groups = positive_int(groups, "groups")
    if in_channels < 1 or out_channels < 1:
        raise ParameterError(
            "in_channels" if in_channels < 1 else "out_channels",
            f"channel counts must be >= 1, got in_channels={in_channels!r}, out_channels={out_channels!r}"
        )
    if in_channels % groups or out_channels % groups:
        raise ParameterError(
            "groups",
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible by "
            f"groups ({groups})"
        )


# --------------------------------------------------------------------------- #
# public shape functions
# --------------------------------------------------------------------------- #
def conv_output_shape(in_shape, kernel_size, *, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Spatial output shape of a forward convolution.

    Parameters
    ----------
    in_shape : tuple of int
        Spatial input shape ``(n_1, ..., n_D)`` (no batch or channel axes).
    kernel_size, stride, dilation : int or tuple of int
    padding : int, tuple of int, tuple of (lo, hi) pairs, or {'valid', 'same', 'full'}

    Returns
    -------
    tuple of int

    Notes
    -----
    Per axis, ``o = floor((n + lo + hi - e) / s) + 1`` with ``e = d(k-1) + 1``.

    Examples
    --------
    >>> conv_output_shape((224, 224), 7, stride=2, padding=3)
    (112, 112)
    >>> conv_output_shape((10,), 4, stride=3, padding="same")
    (4,)
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    ndim = len(in_shape)
    return ConvGeometry.forward(
        in_shape,
        normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1),
        stride=stride,
        padding=padding,
        dilation=dilation,
    ).out_shape


def conv_transpose_output_shape(
    in_shape, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1
) -> tuple[int, ...]:
    """Spatial output shape of a transposed convolution (``ConvTranspose``).

    Notes
    -----
    Per axis, ``m = (n-1)s - 2p + d(k-1) + a + 1`` (``lo + hi`` in place of
    ``2p`` for a ``(lo, hi)`` pair), with ``0 <= a < max(s, d)``.

    Examples
    --------
    >>> conv_transpose_output_shape((2, 2), 3, stride=2)
    (5, 5)
    >>> conv_transpose_output_shape((112,), 7, stride=2, padding=3, output_padding=1)
    (224,)
    """
    in_shape = normalize_shape(in_shape, "in_shape")
    ndim = len(in_shape)
    geom = ConvGeometry.for_transpose(
        in_shape,
        normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    return geom.in_shape


def output_padding_for(output_size, in_shape, kernel_size, *, stride, padding, dilation) -> tuple[int, ...]:
    """The output_padding that makes a transposed convolution produce ``output_size``.

    ``output_size`` is spatial, or ``(C, *spatial)`` / ``(N, C, *spatial)`` as
    PyTorch accepts it (the trailing axes are used).  Raises a ValueError that
    states the valid range when the size cannot be produced.

    Examples
    --------
    >>> output_padding_for((8, 8), (4, 4), (3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1))
    (1, 1)
    """
    ndim = len(in_shape)
    if not _is_sequence(output_size) or len(output_size) not in (ndim, ndim + 1, ndim + 2):
        raise ParameterError(
            "output_size",
            f"output_size must have {ndim} entries (spatial), or {ndim + 2} with batch and channels, "
            f"got {output_size!r}"
        )
    sizes = tuple(as_int(v, "output_size") for v in tuple(output_size)[-ndim:])
    lows, highs, out = [], [], []
    for n, k, s, d, (lo, hi), size in zip(in_shape, kernel_size, stride, dilation, padding, sizes):
        low = (n - 1) * s - lo - hi + extent(k, d)
        lows.append(low)
        highs.append(low + max(s, d) - 1)
        out.append(size - low)
    if any(not (lo <= size <= hi) for lo, hi, size in zip(lows, highs, sizes)):
        raise ParameterError(
            "output_size",
            f"requested an output_size of {sizes!r}, but valid sizes range from {tuple(lows)!r} to "
            f"{tuple(highs)!r} (for an input of {tuple(in_shape)!r}, kernel_size {tuple(kernel_size)!r}, "
            f"stride {tuple(stride)!r}, dilation {tuple(dilation)!r})"
        )
    return tuple(out)


def restoring_output_padding(input_size, kernel_size, *, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """The output_padding with which the transposed convolution restores ``input_size``.

    Parameters
    ----------
    input_size : tuple of int
        Spatial input size ``(i_1, ..., i_D)`` of the forward convolution.
    kernel_size, stride, dilation : int or tuple of int
    padding : int, tuple of int, tuple of (lo, hi) pairs, or {'valid', 'same', 'full'}
        The forward convolution's padding, in any form :func:`conv_matrix` accepts.

    Returns
    -------
    tuple of int
        One ``a`` per axis, ``0 <= a < stride``.

    Notes
    -----
    Per axis ``a = (i + lo + hi - e) mod s``: the forward convolution maps every
    size ``i`` with the same ``floor`` to one output size, and ``a`` picks ``i``
    among them.

    Examples
    --------
    >>> restoring_output_padding((8,), 3, stride=2, padding=1)
    (1,)
    >>> restoring_output_padding((8, 7), (3, 3), stride=2, padding=((1, 1), (1, 1)))
    (1, 0)
    """
    input_size = normalize_shape(input_size, "input_size")
    ndim = len(input_size)
    kernel_size = normalize_per_axis(kernel_size, "kernel_size", ndim, minimum=1)
    stride = normalize_per_axis(stride, "stride", ndim, minimum=1)
    dilation = normalize_per_axis(dilation, "dilation", ndim, minimum=1)
    pads = normalize_padding(
        padding, ndim, in_shape=input_size, kernel_size=kernel_size, stride=stride, dilation=dilation
    )
    return tuple(
        (i + lo + hi - extent(k, d)) % s
        for i, k, s, d, (lo, hi) in zip(input_size, kernel_size, stride, dilation, pads)
    )
