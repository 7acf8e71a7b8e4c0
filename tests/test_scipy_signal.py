"""conv_matrix against scipy.signal.correlate / convolve (single channel, 1-D and 2-D).

* ``flip=False`` is ``scipy.signal.correlate``, ``flip=True`` is ``scipy.signal.convolve``,
  for the 'full' and 'valid' modes, exactly as named.
* 'same' differs by where the odd padding sample goes.  scipy.signal takes the
  centre of the full result starting at ``(k-1)//2``, which puts the odd
  sample on the LOW side: its padding is ``(ceil((k-1)/2), floor((k-1)/2))``.
  convmat's 'same' is PyTorch's and TensorFlow's: the odd sample on the HIGH
  side, ``(floor((k-1)/2), ceil((k-1)/2))``.  So the explicit pair reproduces
  scipy for every k, while ``padding='same'`` reproduces scipy only for odd k
  (where the two splits coincide); for even k the two are one sample apart.
* scipy.signal.correlate conjugates a complex kernel; conv_matrix does not
  (it is a linear map in the weight, like PyTorch's complex convolution).
* Stride is subsampling: a strided 'valid'/'full' matrix is scipy's result
  taken every s-th sample.
"""

import numpy as np
import pytest
from scipy import signal

from convmat import conv_matrix

SHAPES_1D = [((7,), (1,)), ((7,), (2,)), ((7,), (3,)), ((8,), (4,)), ((6,), (5,)), ((5,), (5,)), ((1,), (1,))]
SHAPES_2D = [((5, 6), (3, 3)), ((5, 6), (2, 2)), ((6, 4), (2, 3)), ((4, 7), (4, 1)), ((3, 3), (3, 3)), ((2, 5), (1, 4))]
SHAPES = SHAPES_1D + SHAPES_2D


def _apply(C, x, out_shape):
    return (C @ x.ravel()).reshape(out_shape)


def _matrix(kernel, in_shape, **kwargs):
    return conv_matrix(kernel.reshape((1, 1) + kernel.shape), in_shape, **kwargs)


def scipy_same_padding(kernel_shape):
    """scipy.signal's 'same': the odd sample on the LOW side."""
    return tuple((k // 2, (k - 1) // 2) for k in kernel_shape)  # k//2 == ceil((k-1)/2)


@pytest.mark.parametrize("mode", ["full", "valid"])
@pytest.mark.parametrize("flip", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("in_shape, k_shape", SHAPES)
def test_full_and_valid(in_shape, k_shape, mode, flip, rng):
    x = rng.standard_normal(in_shape)
    w = rng.standard_normal(k_shape)
    ref = (signal.convolve if flip else signal.correlate)(x, w, mode=mode, method="direct")
    C = _matrix(w, in_shape, padding=mode, flip=flip)
    np.testing.assert_allclose(_apply(C, x, ref.shape), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flip", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("in_shape, k_shape", SHAPES)
def test_same_with_scipy_padding_pair(in_shape, k_shape, flip, rng):
    """The explicit pair (ceil((k-1)/2), floor((k-1)/2)) per axis is scipy's 'same', for every k."""
    x = rng.standard_normal(in_shape)
    w = rng.standard_normal(k_shape)
    ref = (signal.convolve if flip else signal.correlate)(x, w, mode="same", method="direct")
    assert ref.shape == in_shape
    C = _matrix(w, in_shape, padding=scipy_same_padding(k_shape), flip=flip)
    np.testing.assert_allclose(_apply(C, x, in_shape), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flip", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("in_shape, k_shape", SHAPES)
def test_same_string_matches_scipy_only_for_odd_kernels(in_shape, k_shape, flip, rng):
    x = rng.standard_normal(in_shape)
    w = rng.standard_normal(k_shape)
    ref = (signal.convolve if flip else signal.correlate)(x, w, mode="same", method="direct")
    got = _apply(_matrix(w, in_shape, padding="same", flip=flip), x, in_shape)
    if all(k % 2 == 1 for k in k_shape):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    else:
        # Even k: with lo = floor((k-1)/2), output j is the full result's sample j + (k-1) - lo,
        # so convmat's 'same' window starts at ceil((k-1)/2) of 'full', scipy's at floor((k-1)/2).
        full = (signal.convolve if flip else signal.correlate)(x, w, mode="full", method="direct")
        start = tuple((k - 1) - (k - 1) // 2 for k in k_shape)
        expect = full[tuple(slice(s0, s0 + n) for s0, n in zip(start, in_shape))]
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)
        assert not np.allclose(got, ref), "even kernel: PyTorch's and scipy's 'same' should differ"


@pytest.mark.parametrize("in_shape, k_shape", SHAPES)
def test_complex_kernel_scipy_conjugates(in_shape, k_shape, rng):
    """correlate(x, w) == conv_matrix(conj(w)) @ x; convolve(x, w) == conv_matrix(w, flip=True) @ x."""
    x = rng.standard_normal(in_shape) + 1j * rng.standard_normal(in_shape)
    w = rng.standard_normal(k_shape) + 1j * rng.standard_normal(k_shape)
    corr = signal.correlate(x, w, mode="full", method="direct")
    conv = signal.convolve(x, w, mode="full", method="direct")
    got_corr = _apply(_matrix(np.conj(w), in_shape, padding="full"), x, corr.shape)
    got_conv = _apply(_matrix(w, in_shape, padding="full", flip=True), x, conv.shape)
    np.testing.assert_allclose(got_corr, corr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_conv, conv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [2, 3, (2, 3)])
@pytest.mark.parametrize("mode", ["full", "valid"])
def test_stride_is_subsampled_scipy(stride, mode, rng):
    in_shape, k_shape = (9, 10), (3, 2)
    x = rng.standard_normal(in_shape)
    w = rng.standard_normal(k_shape)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    ref = signal.correlate(x, w, mode=mode, method="direct")[:: s[0], :: s[1]]
    C = _matrix(w, in_shape, padding=mode, stride=stride)
    np.testing.assert_allclose(_apply(C, x, ref.shape), ref, rtol=1e-12, atol=1e-12)
