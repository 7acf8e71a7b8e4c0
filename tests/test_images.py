"""images_to_columns / columns_to_images: the layout X[:, i] == x[i].ravel(), round trips, errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from convmat import columns_to_images, conv_matrix, images_to_columns


@pytest.mark.parametrize("shape", [(3, 1, 5), (2, 3, 4, 5), (1, 2, 3, 2, 2), (4, 1, 1, 1)])
def test_layout_and_round_trip_batched(shape, rng):
    x = rng.standard_normal(shape)
    X = images_to_columns(x)
    assert X.shape == (int(np.prod(shape[1:])), shape[0])
    for i in range(shape[0]):
        np.testing.assert_array_equal(X[:, i], x[i].ravel())
    back = columns_to_images(X, shape[1:])
    assert back.shape == shape
    np.testing.assert_array_equal(back, x)


def test_batched_is_a_view(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    X = images_to_columns(x)
    assert np.shares_memory(X, x)
    assert np.shares_memory(columns_to_images(X, (3, 4, 4)), x)


def test_unbatched_with_shape(rng):
    x = rng.standard_normal((3, 4, 5))
    X = images_to_columns(x, shape=(3, 4, 5))
    assert X.shape == (60, 1)
    np.testing.assert_array_equal(X[:, 0], x.ravel())
    back = columns_to_images(X, (3, 4, 5))
    assert back.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(back[0], x)


def test_batch_with_shape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(images_to_columns(x, shape=(3, 4, 5)), images_to_columns(x))


def test_single_vector(rng):
    v = rng.standard_normal(12)
    back = columns_to_images(v, (3, 2, 2))
    assert back.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(back.ravel(), v)


def test_with_a_matrix_is_the_convolution(rng):
    """The intended use: columns in, columns out, images back (here a 1 -> 2 channel 3x3 conv)."""
    w = rng.standard_normal((2, 1, 3, 3))
    x = rng.standard_normal((3, 1, 5, 6))
    Y = conv_matrix(w, (5, 6), padding=1) @ images_to_columns(x)
    y = columns_to_images(Y, (2, 5, 6))
    assert y.shape == (3, 2, 5, 6)
    # sample 1, output channel 1, position (2, 3): the 3x3 window around (2, 3) times w[1, 0]
    np.testing.assert_allclose(y[1, 1, 2, 3], np.sum(x[1, 0, 1:4, 2:5] * w[1, 0]), rtol=1e-12)


def test_order_is_c_order_not_fortran(rng):
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    np.testing.assert_array_equal(images_to_columns(x)[:, 0], np.arange(12.0))
    # a Fortran-ordered input gives the same columns (layout is logical, not memory order)
    xf = np.asfortranarray(rng.standard_normal((2, 2, 3, 4)))
    np.testing.assert_array_equal(images_to_columns(xf), np.ascontiguousarray(xf).reshape(2, -1).T)


ERRORS = {
    "batch-without-spatial-axis": (lambda: images_to_columns(np.ones((3, 4))), ValueError,
                                   r"x must have shape \(N, C, \*spatial\).*got \(3, 4\).*shape="),
    "vector": (lambda: images_to_columns(np.ones(5)), ValueError, r"got \(5,\)"),
    "shape-mismatch": (lambda: images_to_columns(np.ones((2, 3, 4)), shape=(3, 5)), ValueError,
                       r"x must have shape \(3, 5\) .*got \(2, 3, 4\)"),
    "not-an-array": (lambda: images_to_columns([[1.0, 2.0]]), TypeError, r"x must be an array.*got list"),
    "bad-shape-arg": (lambda: images_to_columns(np.ones((2, 3, 4)), shape=(3, 0)), ValueError, r"shape.*\(3, 0\)"),
    "columns-wrong-rows": (lambda: columns_to_images(np.ones((11, 2)), (3, 2, 2)), ValueError,
                           r"Y must have shape \(12, N\) or \(12,\) for images of shape \(3, 2, 2\), got \(11, 2\)"),
    "vector-wrong-size": (lambda: columns_to_images(np.ones(13), (3, 2, 2)), ValueError, r"got \(13, 1\)|got \(13,\)"),
    "columns-3d": (lambda: columns_to_images(np.ones((12, 1, 1)), (3, 2, 2)), ValueError, r"got \(12, 1, 1\)"),
    "columns-not-array": (lambda: columns_to_images([1.0] * 12, (3, 2, 2)), TypeError, r"Y must be a dense array"),
    "columns-float-shape": (lambda: columns_to_images(np.ones(12), (3.0, 2, 2)), TypeError, r"shape.*\(3\.0, 2, 2\)"),
    "columns-np-matrix": (lambda: columns_to_images(np.matrix(np.ones((12, 2))), (3, 2, 2)), TypeError,
                          r"^Y must be an array, not numpy.matrix .*numpy.asarray\(Y\)"),
    "images-np-matrix": (lambda: images_to_columns(np.matrix(np.ones((3, 4))), shape=(3, 4)), TypeError,
                         r"^x must be an array, not numpy.matrix"),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("call, exc, match", ERRORS.values(), ids=ERRORS.keys())
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_sparse_columns_are_refused():
    """columns_to_images documents dense input and has a message for sparse results: use it.

    (A scipy sparse array has .shape and .reshape, so it must be recognised explicitly;
    silently returning an N-d sparse COO array is not an image.)
    """
    Y = sp.csr_array(np.ones((12, 1)))
    with pytest.raises(TypeError, match=r"Y must be a dense array \(use \.toarray\(\)"):
        columns_to_images(Y, (3, 2, 2))
