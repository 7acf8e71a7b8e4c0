"""Tiny examples whose expected arrays were worked out by hand (not computed by any library).

* The 4x16 matrix of a 3x3 kernel on a 4x4 input (36 non-zeros), and its flipped version.
* d2l.ai "convolution as matrix multiplication" (ch. 14.10): kernel [[1, 2], [3, 4]] on a
  3x3 input is a 4x9 matrix W; W @ x is the correlation, W.T @ y the transposed convolution.
* d2l.ai transposed convolutions: X = K = [[0, 1], [2, 3]] gives [[0, 0, 1], [0, 4, 6], [4, 12, 9]];
  with stride 2 the 4x4 result; with padding 1, [[4]].
* A 2x2 input upsampled to 5x5 by a 3x3 kernel with stride 2 (ones kernel; kernel 1..9).
* 1-D rows of every padding mode: how reflect/replicate/circular fold the border taps.
* Row and column numbering with several channels and groups.
"""

import numpy as np
import pytest

from convmat import conv_matrix, conv_transpose_matrix

K9 = np.arange(1.0, 10.0).reshape(3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def w4(k):
    """A single-channel kernel as a (1, 1, *k) weight."""
    k = np.asarray(k, dtype=np.float64)
    return k.reshape((1, 1) + k.shape)


# --------------------------------------------------------------------------- #
# forward
# --------------------------------------------------------------------------- #
def test_3x3_kernel_on_4x4_input():
    C = conv_matrix(w4(K9), (4, 4))
    expected = np.array(
        [
            # output (0, 0): input rows 0-2, columns 0-2
            [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0, 0],
            # output (0, 1): input rows 0-2, columns 1-3
            [0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0],
            # output (1, 0): input rows 1-3, columns 0-2
            [0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0],
            # output (1, 1): input rows 1-3, columns 1-3
            [0, 0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9],
        ],
        dtype=np.float64,
    )
    assert C.shape == (4, 16)
    assert C.nnz == 36
    np.testing.assert_array_equal(C.toarray(), expected)
    np.testing.assert_array_equal(C.indices[:9], [0, 1, 2, 4, 5, 6, 8, 9, 10])
    np.testing.assert_array_equal(C.indptr, [0, 9, 18, 27, 36])


def test_3x3_kernel_on_4x4_input_flipped():
    """flip=True uses the kernel rotated by 180 degrees (true convolution)."""
    C = conv_matrix(w4(K9), (4, 4), flip=True)
    np.testing.assert_array_equal(C.toarray()[0], [9, 8, 7, 0, 6, 5, 4, 0, 3, 2, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(C.toarray()[3], [0, 0, 0, 0, 0, 9, 8, 7, 0, 6, 5, 4, 0, 3, 2, 1])


D2L_K = np.array([[1.0, 2.0], [3.0, 4.0]])
D2L_W = np.array(
    [
        [1, 2, 0, 3, 4, 0, 0, 0, 0],
        [0, 1, 2, 0, 3, 4, 0, 0, 0],
        [0, 0, 0, 1, 2, 0, 3, 4, 0],
        [0, 0, 0, 0, 1, 2, 0, 3, 4],
    ],
    dtype=np.float64,
)


def test_d2l_conv_as_matrix_multiplication():
    C = conv_matrix(w4(D2L_K), (3, 3))
    np.testing.assert_array_equal(C.toarray(), D2L_W)
    x = np.arange(9.0)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    # Y[0,0] = 0*1 + 1*2 + 3*3 + 4*4 = 27, and so on
    np.testing.assert_array_equal(C @ x, [27.0, 37.0, 57.0, 67.0])


def test_d2l_transposed_conv_is_W_transposed():
    T = conv_transpose_matrix(w4(D2L_K), (2, 2))
    np.testing.assert_array_equal(T.toarray(), D2L_W.T)
    # scatter of Y = [[27, 37], [57, 67]] through K, added up by hand
    y = np.array([27.0, 37.0, 57.0, 67.0])
    np.testing.assert_array_equal((T @ y).reshape(3, 3), [[27, 91, 74], [138, 400, 282], [171, 429, 268]])


D2L_X = np.array([0.0, 1.0, 2.0, 3.0])  # [[0, 1], [2, 3]] flattened
D2L_TK = np.array([[0.0, 1.0], [2.0, 3.0]])


def test_d2l_transposed_conv_basic():
    T = conv_transpose_matrix(w4(D2L_TK), (2, 2))
    np.testing.assert_array_equal((T @ D2L_X).reshape(3, 3), [[0, 0, 1], [0, 4, 6], [4, 12, 9]])


def test_d2l_transposed_conv_stride_2():
    T = conv_transpose_matrix(w4(D2L_TK), (2, 2), stride=2)
    assert T.shape == (16, 4)
    np.testing.assert_array_equal(
        (T @ D2L_X).reshape(4, 4), [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]
    )


def test_d2l_transposed_conv_padding_1():
    """Padding of a transposed convolution removes a sample from each side of [[0,0,1],[0,4,6],[4,12,9]]."""
    T = conv_transpose_matrix(w4(D2L_TK), (2, 2), padding=1)
    assert T.shape == (1, 4)
    np.testing.assert_array_equal(T @ D2L_X, [4.0])


def test_upsample_2x2_to_5x5_ones_kernel():
    """x = [[1, 2], [3, 4]] scattered with a 3x3 ones kernel at stride 2: overlaps on row/column 2."""
    T = conv_transpose_matrix(np.ones((1, 1, 3, 3)), (2, 2), stride=2)
    assert T.shape == (25, 4)
    assert T.nnz == 36
    expected = [
        [1, 1, 3, 2, 2],
        [1, 1, 3, 2, 2],
        [4, 4, 10, 6, 6],
        [3, 3, 7, 4, 4],
        [3, 3, 7, 4, 4],
    ]
    np.testing.assert_array_equal((T @ np.array([1.0, 2.0, 3.0, 4.0])).reshape(5, 5), expected)
    # all-ones input: how many kernel copies cover each output sample
    np.testing.assert_array_equal(
        (T @ np.ones(4)).reshape(5, 5),
        [[1, 1, 2, 1, 1], [1, 1, 2, 1, 1], [2, 2, 4, 2, 2], [1, 1, 2, 1, 1], [1, 1, 2, 1, 1]],
    )


def test_upsample_2x2_to_5x5_integer_kernel():
    """All-ones 2x2 input, kernel 1..9: output row a gets kernel rows {0}, {1}, {2, 0}, {1}, {2}."""
    T = conv_transpose_matrix(w4(K9), (2, 2), stride=2)
    expected = [
        [1, 2, 4, 2, 3],
        [4, 5, 10, 5, 6],
        [8, 10, 20, 10, 12],
        [4, 5, 10, 5, 6],
        [7, 8, 16, 8, 9],
    ]
    np.testing.assert_array_equal((T @ np.ones(4)).reshape(5, 5), expected)
    # a single input pixel copies the kernel: y = e_3 (bottom-right) lands at rows/cols 2..4
    out = (T @ np.array([0.0, 0.0, 0.0, 1.0])).reshape(5, 5)
    np.testing.assert_array_equal(out[2:, 2:], K9)
    assert out[:2].sum() == 0 and out[:, :2].sum() == 0


# --------------------------------------------------------------------------- #
# padding modes, 1-D, kernel [w0, w1, w2] = [1, 2, 4], n = 4, padding 1
# --------------------------------------------------------------------------- #
PADDED_ROWS = {
    # row 0 reads u = -1, 0, 1; row 3 reads u = 2, 3, 4
    "zeros": [[2, 4, 0, 0], [1, 2, 4, 0], [0, 1, 2, 4], [0, 0, 1, 2]],
    # -1 -> 1 and 4 -> 2: w0 + w2 = 5 on the mirrored sample
    "reflect": [[2, 5, 0, 0], [1, 2, 4, 0], [0, 1, 2, 4], [0, 0, 5, 2]],
    # -1 -> 0 and 4 -> 3: w0 + w1 = 3, w1 + w2 = 6 on the edge samples
    "replicate": [[3, 4, 0, 0], [1, 2, 4, 0], [0, 1, 2, 4], [0, 0, 1, 6]],
    # -1 -> 3 and 4 -> 0: the border taps wrap to the far end
    "circular": [[2, 4, 0, 1], [1, 2, 4, 0], [0, 1, 2, 4], [4, 0, 1, 2]],
}


@pytest.mark.parametrize("mode", PADDED_ROWS)
def test_padding_modes_1d(mode):
    C = conv_matrix(w4([1.0, 2.0, 4.0]), (4,), padding=1, padding_mode=mode)
    np.testing.assert_array_equal(C.toarray(), PADDED_ROWS[mode])
    assert C.nnz == int(np.count_nonzero(PADDED_ROWS[mode]))


def test_reflect_padding_2_folds_twice():
    """n = 3, k = 5, reflect padding 2: row 0 reads u = -2..2 -> 2, 1, 0, 1, 2."""
    C = conv_matrix(w4([1.0, 2.0, 4.0, 8.0, 16.0]), (3,), padding=2, padding_mode="reflect")
    # row 0: col0 = w2 = 4; col1 = w1 + w3 = 10; col2 = w0 + w4 = 17
    # row 1: u = -1..3 -> 1, 0, 1, 2, 1: col0 = w1 = 2; col1 = w0 + w2 + w4 = 21; col2 = w3 = 8
    # row 2: u = 0..4 -> 0, 1, 2, 1, 0: col0 = w0 + w4 = 17; col1 = w1 + w3 = 10; col2 = w2 = 4
    np.testing.assert_array_equal(C.toarray(), [[4, 10, 17], [2, 21, 8], [17, 10, 4]])


def test_strided_dilated_1d():
    """n = 7, k = 2, s = 2, d = 3: output j reads u = 2j and 2j + 3 -> o = (7 - 4)//2 + 1 = 2."""
    C = conv_matrix(w4([5.0, 7.0]), (7,), stride=2, dilation=3)
    np.testing.assert_array_equal(C.toarray(), [[5, 0, 0, 7, 0, 0, 0], [0, 0, 5, 0, 0, 7, 0]])


# --------------------------------------------------------------------------- #
# channels and groups: row c_out*prod(out) + j, column c_in*prod(in) + u
# --------------------------------------------------------------------------- #
def test_channel_blocks():
    """2 -> 3 channels, k = 1 on n = 2: block (c_out, c_in) of C is w[c_out, c_in] * I_2."""
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).reshape(3, 2, 1)
    C = conv_matrix(w, (2,))
    expected = [
        [1, 0, 2, 0],
        [0, 1, 0, 2],
        [3, 0, 4, 0],
        [0, 3, 0, 4],
        [5, 0, 6, 0],
        [0, 5, 0, 6],
    ]
    np.testing.assert_array_equal(C.toarray(), expected)


def test_groups_block_diagonal():
    """groups = 2, 4 -> 2 channels, k = 1 on n = 1: output channel g reads input channels 2g, 2g+1 only."""
    w = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1)
    C = conv_matrix(w, (1,), groups=2)
    np.testing.assert_array_equal(C.toarray(), [[1, 2, 0, 0], [0, 0, 3, 4]])


def test_transposed_groups_swap_channel_axes():
    """ConvTranspose layout (C_in, C_out/groups, k): groups = 2, 2 -> 4 channels, k = 1, n = 1."""
    w = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1)
    T = conv_transpose_matrix(w, (1,), groups=2)
    # input channel 0 feeds output channels 0, 1 with weights 1, 2; input channel 1 feeds 2, 3 with 3, 4
    np.testing.assert_array_equal(T.toarray(), [[1, 0], [2, 0], [0, 3], [0, 4]])
