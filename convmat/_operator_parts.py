"""The pieces of :class:`convmat.operator.ConvOperator` that are not the class itself.

Validation of constructor arguments and operands, image <-> column reshaping
(with the channel-less form of one-channel layers), building ``C^H`` where a
backend needs it, moving a matrix between backends, and the ``repr``.  Every
function takes the backend explicitly; none branches on a library.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import backend_of, detached, get_backend, transfer
from .build import conv_plan, conv_transpose_plan
from .errors import ParameterError, ParameterTypeError
from .memory import MatrixTooLargeError, human
from .weights import as_host_weight, check_weight_shape as _check_shape

# --------------------------------------------------------------------------- #
# construction
# --------------------------------------------------------------------------- #


def plan_from_keywords(weight, in_shape, *, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                       transposed=False, output_padding=0, output_size=None):
    """The ConvPlan of ConvOperator's keywords (forward or transposed), validated.

    ``weight`` is an array (its shape is used) or a weight shape (a tuple).
    The one place where the keywords of the operators and checks become a plan.
    """
    if not isinstance(transposed, (bool, np.bool_)):
        raise ParameterTypeError("transposed", f"transposed must be a bool, got {transposed!r}")
    shape = weight if isinstance(weight, tuple) else getattr(weight, "shape", None)
    if shape is None:
        shape = as_host_weight(weight).shape  # lists: a TypeError for non-numbers
    if transposed:
        if padding_mode != "zeros":
            raise ParameterError(
                "padding_mode",
                f"a transposed convolution takes padding_mode='zeros' only (as PyTorch's ConvTranspose), "
                f"got padding_mode={padding_mode!r}; for the adjoint of a {padding_mode!r}-padded "
                f"convolution use ConvOperator(..., padding_mode={padding_mode!r}).H"
            )
        return conv_transpose_plan(
            tuple(shape), in_shape, stride=stride, padding=padding, output_padding=output_padding,
            output_size=output_size, dilation=dilation, groups=groups,
        )
    if output_size is not None or np.any(np.asarray(output_padding) != 0):
        raise ParameterError(
            "output_padding" if output_size is None else "output_size",
            f"output_padding and output_size apply to a transposed convolution only (transposed=True), "
            f"got output_padding={output_padding!r}, output_size={output_size!r}"
        )
    return conv_plan(
        tuple(shape), in_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode,
    )


def check_weight_shape(weight, plan):
    _check_shape(weight.shape, plan.weight_shape, plan.transposed)


def host_weight_for(plan, weight, be, vdtype):
    """A read-only host copy of ``weight`` in the matrix dtype (to build ``C^H`` later)."""
    host = as_host_weight(weight, be)
    check_weight_shape(host, plan)
    host = np.array(host, dtype=vdtype)
    host.setflags(write=False)
    return host


def host_bias(bias, plan, be, vdtype):
    """A read-only host copy of the bias in the matrix dtype, checked against the plan (None stays None)."""
    if bias is None:
        return None
    bias = as_host_weight(bias, be, "bias")
    c_out = plan.output_shape[0]
    if bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},) (one value per output channel), got {bias.shape}")
    if bias.dtype.kind == "c" and vdtype.kind != "c":
        raise TypeError(f"a complex bias needs a complex matrix (dtype=complex128), got dtype {vdtype}")
    bias = bias.astype(vdtype, copy=True)
    bias.setflags(write=False)
    return bias


def grad_weight_for(weight, be, vdtype, name="weight"):
    """A parameter that requires grad, on the backend in the matrix dtype (the cast is part of the graph)."""
    if vdtype.kind == "c":
        raise TypeError(f"gradients with respect to a complex {name} are not supported; pass {name}.detach()")
    return be.asarray(weight, vdtype)


def check_matrix(matrix, plan, be):
    """``matrix`` as a CSR matrix of backend ``be`` with the plan's shape and nnz, or an error."""
    if be is None or not be.is_sparse(matrix):
        raise TypeError(
            f"matrix must be a sparse CSR matrix (scipy.sparse, cupyx or torch), got {type(matrix).__name__}"
        )
    if getattr(matrix, "format", "csr") != "csr":
        raise TypeError(f"matrix must be in CSR format, got format {matrix.format!r}; convert it with .tocsr()")
    shape = tuple(int(s) for s in matrix.shape)
    if shape != tuple(plan.shape):
        raise ValueError(f"matrix has shape {shape}, but the plan's matrix has shape {tuple(plan.shape)}")
    nnz = int(be.to_host(be.csr_arrays(matrix)[2][-1:])[0])
    if nnz != plan.nnz:
        raise ValueError(f"matrix has {nnz:,} stored entries, but the plan's pattern has {plan.nnz:,}")
    return matrix


# --------------------------------------------------------------------------- #
# operands: flat columns and images
# --------------------------------------------------------------------------- #
def operand(be, x, name):
    """``x`` checked as an array of the backend; kept as it is when autograd tracks it."""
    checked = be.operand(x, name)
    return x if be.tracks_grad(x) else checked


def check_flat(X, n, name, ndims, image_shape):
    """``X`` of shape ``(n,)`` or ``(n, 1)`` (``ndims=1``), or ``(n,)``/``(n, k)`` (``ndims=2``)."""
    shape = tuple(X.shape)
    ok = len(shape) in (1, 2) and shape[0] == n and (ndims == 2 or len(shape) == 1 or shape[1] == 1)
    if not ok:
        allowed = f"({n},) or ({n}, 1)" if ndims == 1 else f"({n}, k)"
        raise ValueError(
            f"{name} has shape {shape} ({shape[0] if shape else 0} rows), but this operator takes {allowed}: "
            f"{n} = prod{image_shape} rows, one column per image"
        )


def image_columns(be, x, shape, name):
    """Images ``x`` -> (columns (F, N), form); form is 'batch', 'image' or 'bare' (no channel axis)."""
    X = operand(be, x, name)
    got = tuple(X.shape)
    F = math.prod(shape)
    if got == shape:
        return X.reshape(1, F).T, "image"
    if len(got) == len(shape) + 1 and got[1:] == shape:
        return X.reshape(got[0], F).T, "batch"
    if shape[0] == 1 and got == shape[1:]:
        return X.reshape(1, F).T, "bare"
    bare = f", or {shape[1:]} (one channel-less image)" if shape[0] == 1 else ""
    raise ValueError(
        f"{name} must have shape {shape} (one image) or (N, {', '.join(map(str, shape))}) (a batch){bare}, "
        f"got {got}"
    )


def columns_to_images(Y, shape, form="batch"):
    """Columns (F, N) -> images (N, *shape), then :func:`unbatch` to ``form``."""
    return unbatch(Y.T.reshape((Y.shape[1],) + tuple(shape)), form)


def unbatch(images, form):
    """Images (N, C, ...) in the form the operand had: a batch, one image, or channel-less if C == 1."""
    if form == "batch":
        return images
    if form == "bare" and images.shape[1] == 1:
        return images[0, 0]
    return images[0]


# --------------------------------------------------------------------------- #
# C^H, moving
# --------------------------------------------------------------------------- #
def adjoint_csr(plan, be, shared):
    """``C^H`` in CSR, built (and kept) the first time it is needed.

    From the weight by the plan's transpose when the weight is known; by
    transposing ``C`` on the host otherwise (an operator made by ``from_matrix``).
    """
    if shared["CH"] is None:
        w = shared["weight"]
        if w is not None:
            w = w.conj() if w.dtype.kind == "c" else w
            shared["CH"] = plan.transpose().build(w, dtype=w.dtype, backend=be)
        else:
            host = get_backend("scipy")
            data, indices, indptr = (be.to_host(a) for a in be.csr_arrays(shared["C"]))
            C = host.csr(data, indices, indptr, plan.shape)
            CH = C.conj().T.tocsr() if data.dtype.kind == "c" else C.T.tocsr()
            CH.sort_indices()
            shared["CH"] = be.csr(*(transfer(a, host, be) for a in (CH.data, CH.indices, CH.indptr)), CH.shape)
    return shared["CH"]


def moved_matrix(op, backend, device):
    """``(dst, C on dst)``, or ``(dst, None)`` when ``dst`` is the operator's own backend."""
    dst, src, plan = get_backend(backend, device), op.backend, op.plan
    if dst == src:
        return dst, None
    data, indices, indptr = src.csr_arrays(op._shared["C"])
    idt = src.dtype_of(indices)
    if idt not in dst.index_dtypes:
        idt = dst.max_index_dtype_for(plan.nnz, plan.shape)
        if idt is None:
            raise MatrixTooLargeError(
                f"backend {dst.name!r} takes {', '.join(map(str, dst.index_dtypes))} indices only, and this "
                f"matrix of shape {plan.shape} has {plan.nnz:,} non-zeros; build it in row blocks "
                f"(ConvPlan.row_blocks)"
            )
    need = plan.nbytes(op.dtype)
    limit = dst.memory_limit()
    if limit is not None and need > limit:
        raise MatrixTooLargeError(
            f"moving the matrix ({human(need)}) to {dst!r} needs more than the memory available there "
            f"({human(limit)})"
        )

    def move(a, dtype=None):
        b = transfer(a, src, dst)
        return b if dtype is None or dst.dtype_of(b) == dtype else dst.astype(b, dtype)

    return dst, dst.csr(move(data), move(indices, idt), move(indptr, idt), plan.shape)


def moved_grad_weight(w, src, dst):
    """A weight that requires grad, moved where autograd can follow it (else None: a constant operator)."""
    if w is None or not dst.autograd:
        return None
    return transfer(w, src, dst)


def _nbytes(be, A) -> int:
    return int(sum(a.nbytes if hasattr(a, "nbytes") else a.numel() * a.element_size() for a in be.csr_arrays(A)))


def describe(op) -> str:
    """The operator's repr: the plan's geometry, the matrix, where it lives, the bias."""
    lines = repr(op.plan).splitlines()
    head = lines[0].replace("ConvPlan(", "", 1)
    if op.is_adjoint:
        head = f"adjoint of [{head}]: input {op.in_shape} -> output {op.out_shape}"
    bias = "none" if op.bias is None else f"shape {tuple(op.bias.shape)}"
    body = [f"  {line.strip()}" for line in lines[1:-1]]
    be, shared = op.backend, op._shared
    where = be.name if be.device is None else f"{be.name}, device {be.device}"
    held = _nbytes(be, shared["C"]) + (0 if shared["CH"] is None else _nbytes(be, shared["CH"]))
    grad = ", weight requires grad" if shared["grad_weight"] is not None else ""
    return "\n".join(
        [f"ConvOperator({head}"]
        + body
        + [
            f"  matrix {op.shape[0]} x {op.shape[1]}, nnz {op.nnz:,}, {op.dtype}, "
            f"{human(held)} in memory ({where}), bias {bias}{grad})"
        ]
    )


def from_matrix_parts(matrix, plan, weight, bias):
    """``(backend, checked matrix, host weight or None, host bias or None)`` of ``ConvOperator.from_matrix``."""
    from .plan import ConvPlan

    if not isinstance(plan, ConvPlan):
        raise ParameterTypeError(
            "plan", f"plan must be a ConvPlan (from conv_plan or conv_transpose_plan), got {type(plan).__name__}"
        )
    be = backend_of(matrix)
    matrix = check_matrix(matrix, plan, be)
    vdtype = be.dtype_of(matrix)
    host_w = None if weight is None else host_weight_for(plan, detached(weight), be, vdtype)
    return be, matrix, host_w, host_bias(bias, plan, be, vdtype)
