"""Bad input is refused at the public boundary, before anything is built.

Every invalid call raises ValueError (a bad value) or TypeError (a bad type),
and the message names the parameter and quotes the offending value (checked
with ``match``).  A request larger than the memory limit raises
MatrixTooLargeError (a MemoryError) before allocating, with the size in the
message; raising ``max_bytes`` or building in row blocks lets it through.
"""

import re
import tracemalloc

import numpy as np
import pytest

from convmat import (
    MatrixTooLargeError,
    conv_matrix,
    conv_output_shape,
    conv_plan,
    conv_transpose_matrix,
    conv_transpose_output_shape,
    conv_transpose_plan,
)

W = np.ones((2, 1, 3, 3))  # forward: 1 -> 2 channels, 3x3
W1 = np.ones((1, 1, 3))  # 1-D, 3 taps
E = re.escape


def fwd(**kwargs):
    kwargs.setdefault("weight", W)
    kwargs.setdefault("in_shape", (5, 5))
    rest = {k: v for k, v in kwargs.items() if k not in ("weight", "in_shape")}
    return lambda: conv_matrix(kwargs["weight"], kwargs["in_shape"], **rest)


def tr(**kwargs):
    kwargs.setdefault("weight", W)
    kwargs.setdefault("in_shape", (4, 4))
    rest = {k: v for k, v in kwargs.items() if k not in ("weight", "in_shape")}
    return lambda: conv_transpose_matrix(kwargs["weight"], kwargs["in_shape"], **rest)


VALUE_ERRORS = {
    # stride and dilation >= 1
    "stride-zero": (fwd(stride=0), r"stride must be >= 1.*got 0"),
    "stride-negative-axis": (fwd(stride=(1, -2)), E("stride must be >= 1") + r".*" + E("(1, -2)")),
    "dilation-zero": (fwd(dilation=0), r"dilation must be >= 1.*got 0"),
    "dilation-negative": (fwd(dilation=(-1, 1)), E("dilation") + r".*" + E("(-1, 1)")),
    "transposed-stride-zero": (tr(stride=0), r"stride must be >= 1.*got 0"),
    "output-shape-stride-zero": (lambda: conv_output_shape((5, 5), 3, stride=0), r"stride.*got 0"),
    # wrong number of entries
    "stride-length": (fwd(stride=(1, 2, 3)), r"stride must be an int or have 2 entries.*" + E("(1, 2, 3)")),
    "padding-length": (fwd(padding=(1, 2, 3)), r"padding must be .*" + E("(1, 2, 3)")),
    "padding-pair-length": (fwd(padding=((1, 2, 3), (1, 1))), r"padding.*" + E("(1, 2, 3)") + r".*pair"),
    # padding >= 0
    "padding-negative": (fwd(padding=-1), r"padding must be >= 0.*got -1"),
    "padding-negative-pair": (fwd(padding=((0, 1), (-1, 0))), r"padding must be >= 0.*" + E("((0, 1), (-1, 0))")),
    "transposed-padding-negative": (tr(padding=-1), r"padding must be >= 0.*got -1"),
    # kernel reach larger than the padded input
    "kernel-too-large": (fwd(in_shape=(2, 5)), r"kernel_size \(3, 3\).*reaches 3 samples on axis 0.*\(2 \+ 0 \+ 0 = 2\)"),
    "dilated-kernel-too-large": (fwd(in_shape=(5, 5), dilation=(1, 3)), r"dilation \(1, 3\) reaches 7 samples on axis 1"),
    "transposed-padding-removes-all": (tr(in_shape=(1, 1), padding=2), r"padding 2 removes everything.*size -1"),
    # channels and groups
    "channels-not-divisible": (fwd(weight=np.ones((3, 1, 3, 3)), groups=2), r"out_channels \(3\).*divisible by groups \(2\)"),
    "transposed-channels-not-divisible": (tr(weight=np.ones((3, 1, 3, 3)), groups=2), r"\(3\).*divisible by groups \(2\)"),
    "groups-zero": (fwd(groups=0), r"groups must be >= 1, got 0"),
    # weight rank vs in_shape
    "weight-rank-vs-in-shape": (fwd(in_shape=(5,)), E("weight of shape (2, 1, 3, 3) has 2 spatial axes but in_shape (5,) has 1")),
    "weight-rank-3d-vs-2d": (fwd(weight=np.ones((1, 1, 2, 2, 2))), r"3 spatial axes but in_shape \(5, 5\) has 2"),
    "weight-without-spatial-axis": (fwd(weight=np.ones((2, 3)), in_shape=(5,)), r"weight must have shape.*got shape \(2, 3\)"),
    "transposed-weight-rank": (tr(in_shape=(4, 4, 4)), r"2 spatial axes but in_shape \(4, 4, 4\) has 3"),
    "zero-size-input": (fwd(in_shape=(0, 5)), r"in_shape must contain positive sizes, got \(0, 5\)"),
    "no-spatial-axis": (fwd(in_shape=()), r"in_shape must have at least one spatial axis, got \(\)"),
    "empty-kernel": (fwd(weight=np.ones((1, 1, 0)), in_shape=(5,)), r"positive sizes, got \(1, 1, 0\)"),
    # output_padding in [0, max(stride, dilation))
    "output-padding-equals-stride": (tr(stride=2, output_padding=2),
        r"output_padding must be smaller than max\(stride, dilation\).*output_padding=2.*stride=\(2, 2\)"),
    "output-padding-with-dilation": (tr(weight=W1, in_shape=(3,), dilation=3, output_padding=3),
        r"output_padding=3.*dilation=\(3,\)"),
    "output-padding-one-axis": (tr(stride=(2, 3), output_padding=(1, 3)), r"output_padding=\(1, 3\).*axis 1: 3 >= 3"),
    "output-padding-negative": (tr(stride=2, output_padding=-1), r"output_padding must be >= 0.*got -1"),
    "output-padding-length": (tr(stride=2, output_padding=(1, 1, 1)), r"output_padding.*2 entries.*\(1, 1, 1\)"),
    "output-shape-fn-output-padding": (
        lambda: conv_transpose_output_shape((5, 5), 3, stride=2, output_padding=2), r"output_padding=2"),
    # padding modes
    "reflect-padding-equals-size": (fwd(in_shape=(3, 5), padding=3, padding_mode="reflect"),
        r"padding_mode='reflect'.*padding \(3, 3\) for size 3 on axis 0"),
    "reflect-padding-one-side": (fwd(in_shape=(5, 2), padding=((0, 0), (0, 2)), padding_mode="reflect"),
        r"reflect.*\(0, 2\) for size 2 on axis 1"),
    "circular-padding-beyond-size": (fwd(in_shape=(3, 5), padding=4, padding_mode="circular"),
        r"padding_mode='circular'.*padding \(4, 4\) for size 3 on axis 0"),
    "unknown-padding-string": (fwd(padding="middle"), r"padding must be .*got 'middle'"),
    "padding-string-case": (fwd(padding="SAME"), r"padding.*got 'SAME'"),
    "transposed-padding-string": (tr(padding="same"), r"padding must be .*transposed.*got 'same'"),
    "unknown-padding-mode": (fwd(padding_mode="mirror"), r"padding_mode must be one of.*got 'mirror'"),
    "padding-mode-torch-spelling": (fwd(padding_mode="constant"), r"padding_mode.*got 'constant'"),
    # output_size
    "output-size-too-large": (tr(stride=2, padding=1, output_size=(9, 9)),
        E("requested an output_size of (9, 9), but valid sizes range from (7, 7) to (8, 8)")),
    "output-size-too-small": (tr(stride=2, padding=1, output_size=(6, 7)),
        E("output_size of (6, 7)") + r".*range from \(7, 7\) to \(8, 8\)"),
    "output-size-dilated-range": (tr(weight=W1, in_shape=(3,), dilation=3, output_size=(12,)), r"range from \(9,\) to \(11,\)"),
    "output-size-length": (tr(stride=2, output_size=(9,)), r"output_size must have 2 entries.*got \(9,\)"),
    "output-size-int": (tr(weight=W1, in_shape=(4,), output_size=6), r"output_size.*got 6"),
    "output-size-and-output-padding": (tr(stride=2, output_size=(9, 9), output_padding=1),
        r"output_size or output_padding, not both.*output_size=\(9, 9\).*output_padding=1"),
    # rows
    "rows-reversed": (fwd(rows=(5, 2)), r"rows must satisfy 0 <= start <= stop <= 18.*got \(5, 2\)"),
    "rows-past-end": (fwd(rows=(0, 19)), r"rows must satisfy.*<= 18.*got \(0, 19\)"),
    "rows-negative": (fwd(rows=(-1, 3)), r"rows must satisfy.*got \(-1, 3\)"),
    "rows-step": (fwd(rows=slice(0, 4, 2)), r"rows must be a contiguous range.*slice\(0, 4, 2\)"),
    "transposed-rows-past-end": (tr(weight=W1, in_shape=(3,), rows=(0, 6)), r"rows must satisfy.*<= 5.*got \(0, 6\)"),
    # weight vs plan
    "plan-weight-shape": (lambda: conv_plan((2, 1, 3, 3), (5, 5)).build(np.ones((2, 1, 3, 2))),
                          E("weight must have shape (2, 1, 3, 3)") + r".*got \(2, 1, 3, 2\)"),
    "transposed-plan-weight-layout": (lambda: conv_transpose_plan((2, 1, 3, 3), (5, 5)).build(np.ones((1, 2, 3, 3))),
                                      r"weight must have shape \(2, 1, 3, 3\) \(C_in, C_out/groups.*got \(1, 2, 3, 3\)"),
    # other build options
    "threads-zero": (fwd(threads=0), r"threads must be >= 1, got 0"),
    "unknown-backend": (fwd(backend="jax"), r"backend must be one of.*got 'jax'"),
    "max-bytes-negative": (fwd(max_bytes=-1), r"max_bytes must be >= 0.*got -1"),
    # absurd sizes: refused, naming the parameter, before anything is allocated
    "stride-absurd": (fwd(stride=10**20), r"stride must be at most 2\*\*62 in size, got 100000000000000000000"),
    "padding-absurd": (fwd(padding=2**63), r"padding must be at most 2\*\*62 in size, got 9223372036854775808"),
    "in-shape-absurd": (fwd(in_shape=(10**19, 5)), r"in_shape must be at most 2\*\*62"),
    "dilation-absurd-entry": (fwd(dilation=(1, -(2**70))), r"dilation must be at most 2\*\*62"),
    "matrix-beyond-int64": (fwd(in_shape=(2**40, 2**40), padding=1), r"in_shape.*more than an int64 can index"),
    "padding-beyond-int64": (fwd(in_shape=(5, 5), padding=((0, 2**62), (0, 2**62))), r"padding.*more than an int64"),
}

TYPE_ERRORS = {
    # non-integer sizes: floats, bools, strings
    "in-shape-float": (fwd(in_shape=(5.0, 5)), r"in_shape must be .*ints, got \(5\.0, 5\)"),
    "in-shape-bool": (fwd(in_shape=(True, 5)), r"in_shape.*got \(True, 5\)"),
    "in-shape-string": (fwd(in_shape="55"), r"in_shape.*got '55'"),
    "stride-float": (fwd(stride=1.5), r"stride must be an int or a sequence of 2 ints, got 1\.5"),
    "stride-bool": (fwd(stride=True), r"stride.*got True"),
    "stride-string": (fwd(stride="2"), r"stride.*got '2'"),
    "dilation-float-entry": (fwd(dilation=(1, 2.0)), r"dilation.*got \(1, 2\.0\)"),
    "padding-float": (fwd(padding=1.0), r"padding must be .*got 1\.0"),
    "padding-float-entry": (fwd(padding=(1, 1.5)), r"padding.*got \(1, 1\.5\)"),
    "padding-bool": (fwd(padding=False), r"padding.*got False"),
    "groups-float": (fwd(groups=1.0), r"groups must be an integer, got 1\.0"),
    "groups-bool": (fwd(groups=True), r"groups must be an integer, got True"),
    "output-padding-string": (tr(output_padding="1"), r"output_padding.*got '1'"),
    "output-size-float": (tr(stride=2, padding=1, output_size=(8.0, 8)), r"output_size must be an integer, got 8\.0"),
    "plan-weight-shape-float": (lambda: conv_plan((1, 1, 3.0), (5,)), r"weight_shape.*got \(1, 1, 3\.0\)"),
    "padding-mode-none": (fwd(padding_mode=None), r"padding_mode must be a string.*got None"),
    "threads-bool": (fwd(threads=True), r"threads must be an integer, got True"),
    "max-bytes-float": (fwd(max_bytes=1e9), r"max_bytes must be an integer, got 1000000000\.0"),
    # dtypes
    "dtype-float16": (fwd(dtype=np.float16), r"dtype must be one of float32, float64, complex64, complex128, got .*float16"),
    "dtype-int32": (fwd(dtype=np.int32), r"dtype must be one of.*int32"),
    "dtype-object": (fwd(dtype=object), r"dtype must be one of.*object"),
    "dtype-string": (fwd(dtype="U5"), r"dtype must be one of.*'U5'"),
    "dtype-unknown-name": (fwd(dtype="float99"), r"dtype must be one of.*'float99'"),
    "dtype-drops-imaginary": (fwd(weight=W + 1j, dtype=np.float64),
        r"dtype float64 would drop the imaginary part of a complex128 weight"),
    "weight-float16": (fwd(weight=W.astype(np.float16)), r"weight dtype must be one of.*got float16"),
    "weight-object": (fwd(weight=W.astype(object)), r"weight must be an array of numbers, got dtype object"),
    "weight-strings": (fwd(weight=np.full((1, 1, 2, 2), "a")), r"weight must be an array of numbers, got dtype <U1"),
    "weight-none": (fwd(weight=None), r"weight must be an array"),
    "flip-string": (fwd(flip="yes"), r"flip must be a bool, got 'yes'"),
    "rows-int": (fwd(rows=4), r"rows must be a slice or a \(start, stop\) pair, got 4"),
    "rows-triple": (fwd(rows=(0, 2, 3)), r"rows must be a slice or a \(start, stop\) pair, got \(0, 2, 3\)"),
    "rows-float": (fwd(rows=(0, 2.0)), r"rows must be an integer, got 2\.0"),
    "stride-bool-array": (fwd(stride=np.array(True)), r"stride.*got array\(True\)"),
    "stride-float-array": (fwd(stride=np.array(2.0)), r"stride.*got array\(2\.\)"),
    "max-bytes-huge-float": (fwd(max_bytes=1e400), r"max_bytes must be an integer, got inf"),
}


@pytest.mark.parametrize("call, match", VALUE_ERRORS.values(), ids=VALUE_ERRORS.keys())
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", TYPE_ERRORS.values(), ids=TYPE_ERRORS.keys())
def test_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("case", sorted(set(VALUE_ERRORS) | set(TYPE_ERRORS)))
def test_errors_carry_the_parameter_they_name(case):
    """``exc.parameter`` names the offending argument, and the message names it too (the CLI maps on it)."""
    call, _ = VALUE_ERRORS.get(case) or TYPE_ERRORS[case]
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    name = getattr(info.value, "parameter", None)
    assert isinstance(name, str) and name in str(info.value), (name, str(info.value))


def test_zero_dimensional_integer_arrays_are_ints():
    """``stride=np.array(2)`` is the int 2 (and per-axis arrays of ints are per-axis ints)."""
    A = conv_matrix(W, (7, 7), stride=np.array(2), padding=np.array([1, 0]), dilation=np.int64(1))
    B = conv_matrix(W, (7, 7), stride=2, padding=(1, 0))
    assert (A != B).nnz == 0


def test_big_endian_weights_are_converted():
    w = np.arange(18.0).reshape(2, 1, 3, 3)
    A = conv_matrix(w.astype(">f8"), (5, 5), padding=1)
    B = conv_matrix(w, (5, 5), padding=1)
    assert A.dtype == np.float64 and A.dtype.isnative
    assert (A != B).nnz == 0 and np.array_equal(A.data, B.data)
    C = conv_matrix(w.astype(">i4"), (5, 5), padding=1)  # big-endian integers: float64 values
    assert C.dtype == np.float64 and np.array_equal(C.data, B.data)


def test_bfloat16_and_float16_weights_are_refused_naming_weight():
    with pytest.raises(TypeError, match=r"weight dtype must be one of.*got float16") as info:
        conv_matrix(W.astype(np.float16), (5, 5))
    assert info.value.parameter == "weight"
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not installed")
    with pytest.raises(TypeError, match=r"weight must have dtype float32.*got torch\.bfloat16") as info:
        conv_matrix(torch.ones((2, 1, 3, 3), dtype=torch.bfloat16), (5, 5))
    assert info.value.parameter == "weight"


def test_restoring_output_padding_takes_every_padding_form():
    from convmat import restoring_output_padding

    assert restoring_output_padding((8,), 3, stride=2, padding=1) == (1,)
    assert restoring_output_padding((8, 7), (3, 3), stride=(2, 2), padding=(1, 1)) == (1, 0)
    assert restoring_output_padding((8, 7), 3, stride=2, padding=((1, 1), (1, 1))) == (1, 0)
    assert restoring_output_padding((8,), 3, stride=2, padding="same") == (0,)  # 'same': (0, 1)
    with pytest.raises(ValueError, match=r"stride must be >= 1") as info:
        restoring_output_padding((8,), 3, stride=0, padding=1)
    assert info.value.parameter == "stride"


def test_value_errors_are_not_type_errors():
    """The split is meaningful: a bad value is a ValueError only (so `except TypeError` does not hide it)."""
    with pytest.raises(ValueError) as info:
        fwd(stride=0)()
    assert not isinstance(info.value, TypeError)


def test_plans_validate_like_builders():
    """The plan constructors refuse exactly what the builders refuse (same messages)."""
    with pytest.raises(ValueError, match=r"padding_mode='reflect'.*size 3 on axis 0"):
        conv_plan((1, 1, 3, 3), (3, 5), padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"range from \(7, 7\) to \(8, 8\)"):
        conv_transpose_plan((2, 1, 3, 3), (4, 4), stride=2, padding=1, output_size=(6, 6))


def test_row_nnz_rejects_ranges_outside_the_matrix():
    """plan.row_nnz(a, b) is public: a range outside [0, rows] must raise, not return a made-up count."""
    plan = conv_plan((1, 1, 3), (5,))  # 3 rows, 9 non-zeros
    assert plan.row_nnz(0, 3) == 9
    with pytest.raises(ValueError, match=r"rows"):
        plan.row_nnz(0, 4)  # one row past the end
    with pytest.raises(ValueError, match=r"rows"):
        plan.row_nnz(2, 1)  # reversed


# --------------------------------------------------------------------------- #
# too large for memory
# --------------------------------------------------------------------------- #
BIG_W = (64, 64, 3, 3)
BIG_IN = (4096, 4096)


def test_too_large_raises_before_allocating():
    """64 -> 64 channels, 3x3 on 4096x4096: ~6.2e11 non-zeros, ~10 TB; refused with the size named."""
    plan = conv_plan(BIG_W, BIG_IN, padding=1)
    need = plan.nbytes(np.float64)
    assert need > 5 * 10**12
    assert plan.index_dtype == np.int64
    weight = np.zeros(BIG_W)
    tracemalloc.start()
    try:
        with pytest.raises(MatrixTooLargeError) as info:
            conv_matrix(weight, BIG_IN, padding=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert isinstance(info.value, MemoryError)
    assert f"{need:,}" in message  # exact bytes
    assert "TB" in message and "(1073741824, 1073741824)" in message  # human size and shape
    assert "rows=" in message and "max_bytes" in message  # what to do instead
    # The matrix would take 10 TB; refusing it must not cost more than a few plan-sized tables.
    # (Here O(rows) temporaries, 16.7 M rows, would be ~270 MB.)
    assert peak < 32 * 2**20, f"refusing the request allocated {peak / 1e6:.0f} MB"


def test_too_large_transposed():
    with pytest.raises(MatrixTooLargeError, match=r"TB"):
        conv_transpose_matrix(np.zeros(BIG_W), (2048, 2048), stride=2, padding=1, output_padding=1)


def test_max_bytes_small_limit():
    """max_bytes=1000 on an 18x25 matrix of 2,020 bytes: refused, naming both sizes."""
    plan = conv_plan(W.shape, (5, 5))
    need = plan.nbytes(np.float64)
    assert need == 162 * (8 + 4) + 19 * 4 == 2020
    with pytest.raises(MatrixTooLargeError, match=r"2,020 bytes as float64.*limit max_bytes \(1\.0 kB\)"):
        conv_matrix(W, (5, 5), max_bytes=1000)
    with pytest.raises(MemoryError):  # a MemoryError subclass: generic handlers catch it
        plan.build(W, max_bytes=1000)


def test_max_bytes_large_enough_builds():
    C = conv_matrix(W, (5, 5), max_bytes=10**6)
    assert C.nnz == 162
    C32 = conv_matrix(W, (5, 5), max_bytes=10**6, dtype=np.float32)
    assert C32.dtype == np.float32


def test_row_block_fits_where_the_whole_does_not():
    """A limit between a block's size and the whole matrix's: the block builds, the whole is refused."""
    plan = conv_plan((8, 8, 3, 3), (32, 32), padding=1)
    whole = plan.nbytes(np.float64)
    block = plan.nbytes(np.float64, rows=(0, 100))
    limit = (whole + block) // 2
    with pytest.raises(MatrixTooLargeError):
        plan.build(np.ones((8, 8, 3, 3)), max_bytes=limit)
    B = plan.build(np.ones((8, 8, 3, 3)), max_bytes=limit, rows=(0, 100))
    assert B.shape == (100, plan.shape[1])
    assert B.data.nbytes + B.indices.nbytes + B.indptr.nbytes == block


def test_big_row_block_builds():
    """A few rows of the 10 TB matrix build fine (int64 indices, as the plan says)."""
    plan = conv_plan(BIG_W, BIG_IN, padding=1)
    B = plan.build(np.ones(BIG_W, dtype=np.float32), rows=(4096 * 4096 - 5, 4096 * 4096 + 5))
    assert B.shape == (10, plan.shape[1])
    assert B.nnz == plan.row_nnz(4096 * 4096 - 5, 4096 * 4096 + 5)
    assert B.indices.dtype == plan.index_dtype == np.int64
    assert B.data.nbytes + B.indices.nbytes + B.indptr.nbytes == plan.nbytes(np.float32, rows=(4096**2 - 5, 4096**2 + 5))
    # the last rows of channel 0 and the first of channel 1: 4 x 64 corner/edge entries ... per row
    assert np.diff(B.indptr).tolist() == [6 * 64] * 4 + [4 * 64] + [4 * 64] + [6 * 64] * 4
