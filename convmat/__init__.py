"""convmat: convolution layers written down as explicit sparse matrices.

``Y = C @ X`` is the forward convolution (cross-correlation, as PyTorch
computes it) and ``C.T`` the transposed convolution.  Importing convmat loads
NumPy and SciPy only.
"""

from .build import (
    ConvPlan,
    MatrixTooLargeError,
    conv_matrix,
    conv_plan,
    conv_transpose_matrix,
    conv_transpose_plan,
)
from .geometry import PADDING_MODES, conv_output_shape, conv_transpose_output_shape
from .images import columns_to_images, images_to_columns

__version__ = "0.1.0"

__all__ = [
    "ConvPlan",
    "MatrixTooLargeError",
    "PADDING_MODES",
    "columns_to_images",
    "conv_matrix",
    "conv_output_shape",
    "conv_plan",
    "conv_transpose_matrix",
    "conv_transpose_output_shape",
    "conv_transpose_plan",
    "images_to_columns",
]
