"""The ``convmat`` argument parser: option types (stdlib only) and the four subcommands' options."""

from __future__ import annotations

import argparse
import math
import re
import textwrap

from ..geometry import PADDING_MODES, PADDING_STRINGS

__all__ = ["build_parser", "CommandError", "COMMANDS", "DTYPES", "DEFAULT_MAX_DENSE"]

PADDING_KEYWORDS = tuple(PADDING_STRINGS)
#: The matrix dtypes --dtype offers (convmat.weights.VALUE_DTYPES; a test keeps them equal).
DTYPES = ("float32", "float64", "complex64", "complex128")
#: Default of ``draw --max-dense``: the largest matrix dimension drawn entry by entry, and the
#: largest grid (cells of one channel) drawn as frames.
DEFAULT_MAX_DENSE = 400

#: Each subcommand, with its one-line summary (also the short usage of a bare ``convmat``).
COMMANDS = {
    "shape": "print output shapes, matrix sizes and the transposed-conv recipe (builds nothing)",
    "build": "build the CSR matrix and save it with scipy.sparse.save_npz",
    "check": "run the adjoint test, the recipe identity and comparisons with PyTorch",
    "draw": "draw the matrix, the convolution arithmetic (PNG + GIF) and the transposed-conv recipe",
}


class CommandError(Exception):
    """A problem to report in one line, ``argument OPTION: message`` (exit status 2)."""

    def __init__(self, option: str | None, message: str):
        super().__init__(f"argument {option}: {message}" if option else message)
        self.option = option


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump) and exit status 2."""

    def error(self, message):
        message = " ".join(message.split())
        self.exit(2, f"convmat: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- #
# option types (they run while parsing)
# --------------------------------------------------------------------------- #
def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


_positive = _int_at_least(1)
_nonnegative = _int_at_least(0)


def _padding_token(text):
    """One --padding token: an int, 'lo:hi', or a keyword."""
    if text in PADDING_KEYWORDS:
        return text
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected lo:hi (two integers), got {text!r}")
        lo, hi = (_nonnegative(p) for p in parts)
        return (lo, hi)
    try:
        return _nonnegative(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0, lo:hi, or one of {', '.join(PADDING_KEYWORDS)}; got {text!r}"
        ) from None


def _output_padding_token(text):
    if text == "restore":
        return text
    try:
        return _nonnegative(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'restore', got {text!r}") from None


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def _byte_size(text):
    """'2000000000', '2e9', '2GB', '1.5GiB' -> bytes (a finite number, at least 1)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 2000000000, 2e9, 2GB or 1.5GiB, got {text!r}"
        )
    value = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of bytes, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return int(value)


# --------------------------------------------------------------------------- #
# the parser
# --------------------------------------------------------------------------- #
GEOMETRY_HELP = """\
geometry (a forward convolution, as torch.nn.ConvNd; 1 to 3 spatial axes, or more):
  Per-axis options take one value (used on every axis) or one value per axis of --in-shape.
  --padding forms:
    1             1 on both sides of every axis
    1 2           1 on axis 0, 2 on axis 1 (both sides)
    1:2 0:0       asymmetric, lo:hi per axis (1 before and 2 after on axis 0, none on axis 1)
    1:2           the same (lo, hi) on every axis
    valid | same | full
                  same: output ceil(n/stride), total padding max((o-1)s + e - n, 0) with the odd
                  sample on the HIGH side (PyTorch, TensorFlow; scipy.signal puts it on the low side);
                  full: e-1 on both sides; e = dilation*(kernel-1)+1.
  The weight is (C_out, C_in/groups, *kernel) for the forward convolution; the transposed
  convolution uses the same tensor, which is its (C_in, C_out/groups, *kernel) layout.
"""

_SEED_HELP = "seed of the random weight{} (an integer >= 0, default 0)"


def _add_geometry(p, name):
    kernel_required = name != "build"
    g = p.add_argument_group("geometry")
    g.add_argument("--in-shape", type=_positive, nargs="+", required=True, metavar="N",
                   help="spatial input shape of the forward convolution, e.g. 32 32")
    g.add_argument("--kernel", type=_positive, nargs="+", required=kernel_required, metavar="K",
                   help="kernel size, one int or one per axis"
                   + ("" if kernel_required else " (default: from --weight)"))
    g.add_argument("--stride", type=_positive, nargs="+", default=[1], metavar="S", help="default 1")
    g.add_argument("--padding", type=_padding_token, nargs="+", default=[0], metavar="P",
                   help="int, int per axis, lo:hi per axis, or valid/same/full (default 0; see below)")
    g.add_argument("--dilation", type=_positive, nargs="+", default=[1], metavar="D", help="default 1")
    g.add_argument("--in-channels", type=_positive, default=None, metavar="C",
                   help="forward input channels (default 1" + ("" if kernel_required else ", or from --weight") + ")")
    g.add_argument("--out-channels", type=_positive, default=None, metavar="C",
                   help="forward output channels (default 1" + ("" if kernel_required else ", or from --weight") + ")")
    g.add_argument("--groups", type=_positive, default=1, metavar="G", help="default 1")
    g.add_argument("--padding-mode", choices=PADDING_MODES, default="zeros",
                   help="forward convolution's padding mode (default zeros); the transposed "
                   "convolution pads with zeros only")
    g.add_argument("--output-padding", type=_output_padding_token, nargs="+", default=None, metavar="A",
                   help="output_padding of the transposed convolution, 0 <= A < max(stride, dilation), "
                   "one int or one per axis; 'restore' (default) picks the one that gives back --in-shape"
                   + ("" if name in ("shape", "draw") else " (with --transposed only)"))


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def _subparser(sub, name, description):
    p = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=GEOMETRY_HELP,
                       help=COMMANDS[name], description=_wrap(description))
    _add_geometry(p, name)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``convmat`` parser; each subcommand's ``func`` default is its name (see convmat.cli.commands)."""
    parser = _Parser(
        prog="convmat",
        description="Convolution layers as explicit sparse CSR matrices: Y = C @ X is PyTorch's "
        "convolution (cross-correlation), C.T the transposed convolution.",
        epilog="Run 'convmat COMMAND --help' for the options of each command. Exit status: 0 success, "
        "1 a check failed, 2 bad arguments, a matrix over the size limit, or a file that cannot be read "
        "or written (one line 'convmat: error: ...' on stderr).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _subparser(sub, "shape",
               "Print the forward and transposed output shapes, the matrices' shapes, nnz, bytes (float32 and "
               "float64), index dtype and density, and the recipe of the transposed convolution as a stride-1 "
               "convolution. Nothing is built: every number comes from the index arithmetic.")

    p = _subparser(sub, "build",
                   "Build the matrix C (or the transposed convolution's matrix, --transposed) and save it with "
                   "scipy.sparse.save_npz; load it with scipy.sparse.load_npz. Matrices larger than the "
                   "available memory (or --max-bytes) are refused before anything is allocated.")
    p.add_argument("--transposed", action="store_true",
                   help="the transposed convolution taking the forward output back (same weight tensor)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weight", metavar="W.npy",
                   help="weight from a .npy file (numpy.save), shape (C_out, C_in/groups, *kernel); it sets "
                   "--kernel and the channel counts when those are not given")
    w.add_argument("--seed", type=_nonnegative, default=0,
                   help="random weight numpy.random.default_rng(SEED).standard_normal(weight_shape), "
                   "then cast to --dtype (an integer >= 0, default 0; used when --weight is not given)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="matrix values (default: float32 for --seed, the file's dtype for --weight)")
    p.add_argument("--max-bytes", type=_byte_size, default=None, metavar="BYTES",
                   help="size limit, e.g. 8GB or 2e9 (default: the smallest of the available memory, the cgroup "
                   "memory limit and RLIMIT_AS)")
    p.add_argument("-o", "--output", required=True, metavar="C.npz",
                   help="the file to write; '.npz' is added when the name does not end with it")

    p = _subparser(sub, "check",
                   "Run convmat.checks.check_geometry on this geometry with a random weight and print one row "
                   "per check: name, value, tolerance, pass. Exit status 0 when every row passes, 1 otherwise.")
    p.add_argument("--transposed", action="store_true", help="check the transposed convolution")
    p.add_argument("--seed", type=_nonnegative, default=0, help=_SEED_HELP.format(" and of the test vectors"))
    p.add_argument("--no-torch", action="store_true", help="skip the comparisons with PyTorch")
    p.add_argument("--max-bytes", type=_byte_size, default=None, metavar="BYTES",
                   help="refuse geometries whose checks would hold more than this, e.g. 2GB (default: the "
                   "available memory, cgroup limit or RLIMIT_AS); the checks hold up to about eight float64 "
                   "copies of the checked matrix")

    p = _subparser(sub, "draw",
                   "Write pictures of this geometry, all derived from the matrices: matrix.png and matrix_T.png "
                   "(the non-zeros of C and of the transposed convolution's matrix), conv_frame.png and "
                   "conv.gif (one frame per output pixel: the input cells each row of C reads), recipe.png "
                   "(the transposed convolution as a scatter and as zero insertion + padding + flipped "
                   "kernel), conv_transpose.gif (the scatter, one frame per input pixel), output_padding.png "
                   "(two output paddings side by side) and recipe_matrices.png (T = K_flip P Z with the "
                   "channels and groups). Frames show one channel of 1-D or 2-D geometries whose grid has at most "
                   "--max-dense cells; larger matrices are drawn as a summary.")
    p.add_argument("-o", "--out", default="out", metavar="DIR", help="output directory (default out)")
    p.add_argument("--max-frames", type=_positive, default=64, metavar="F",
                   help="animate at most F output pixels (default 64)")
    p.add_argument("--max-dense", type=_positive, default=DEFAULT_MAX_DENSE, metavar="M",
                   help=f"draw every entry of a matrix with at most M rows and columns (a summary otherwise), "
                   f"and frames and the recipe only for a grid of at most M cells per channel: the padded "
                   f"input, n+lo+hi per axis, and the recipe's n+e-1 (default {DEFAULT_MAX_DENSE})")
    p.add_argument("--seed", type=_nonnegative, default=0, help=_SEED_HELP.format(" of the matrix plots"))
    return parser
