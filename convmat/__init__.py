"""convmat: convolution layers written down as explicit sparse matrices.

``Y = C @ X`` is the forward convolution (cross-correlation, as PyTorch
computes it) and ``C.T`` the transposed convolution.  Matrices are built on
the host (``scipy.sparse``), on a CUDA device (``backend='cupy'``) or on any
torch device (``backend='torch'``).  Importing convmat loads NumPy and SciPy
only.
"""

from .backends import get_backend
from .build import (
    ConvPlan,
    MatrixTooLargeError,
    conv_matrix,
    conv_plan,
    conv_transpose_matrix,
    conv_transpose_plan,
)
from .checks import AdjointTestResult, adjoint_test, check_geometry
from .factors import (
    flip_kernel,
    kernel_zero_insertion,
    padding_matrix,
    recipe_factors,
    stride_matrix,
    transpose_by_recipe,
    zero_insertion_matrix,
)
from .geometry import PADDING_MODES, conv_output_shape, conv_transpose_output_shape, restoring_output_padding
from .imagefiles import read_image, read_images, write_image
from .images import columns_to_images, images_to_columns
from .operator import ConvOperator
from .streamed import StreamedConvOperator
from .spectrum import circular_singular_values, operator_norm

__version__ = "0.1.0"

__all__ = [
    # the core: geometry -> plan -> CSR
    "PADDING_MODES",
    "ConvPlan",
    "MatrixTooLargeError",
    "conv_output_shape",
    "conv_transpose_output_shape",
    "restoring_output_padding",
    "conv_plan",
    "conv_transpose_plan",
    "conv_matrix",
    "conv_transpose_matrix",
    "get_backend",
    # images <-> columns, image files
    "images_to_columns",
    "columns_to_images",
    "read_image",
    "read_images",
    "write_image",
    # the operator and the duality toolkit
    "ConvOperator",
    "StreamedConvOperator",
    "AdjointTestResult",
    "adjoint_test",
    "check_geometry",
    "stride_matrix",
    "zero_insertion_matrix",
    "padding_matrix",
    "flip_kernel",
    "kernel_zero_insertion",
    "recipe_factors",
    "transpose_by_recipe",
    "operator_norm",
    "circular_singular_values",
]
