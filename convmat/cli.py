"""The ``convmat`` command line: sizes, matrices and checks of one convolution layer.

Three subcommands share one set of geometry options, which describe a
*forward* convolution (PyTorch's ``ConvNd``)::

    convmat shape --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --in-channels 3 --out-channels 8
    convmat build --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --seed 0 -o C.npz
    convmat check --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --transposed

``shape`` prints sizes without building anything, ``build`` writes the CSR
matrix with :func:`scipy.sparse.save_npz`, ``check`` runs
:func:`convmat.checks.check_geometry`.  ``--transposed`` means the transposed
convolution (``ConvTransposeNd``) that takes the forward output back to the
input; it uses the same weight tensor.

Nothing is computed at import time; NumPy and SciPy are imported when a
subcommand runs, PyTorch only by ``check`` (through convmat.checks).

Exit status: 0 success; 1 ``check`` found a failing row; 2 bad arguments, a
matrix over the size limit, or a file that cannot be read or written.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import time

__all__ = ["main", "build_parser"]

PADDING_KEYWORDS = ("valid", "same", "full")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # as convmat.geometry.PADDING_MODES
DTYPES = ("float32", "float64", "complex64", "complex128")

#: convmat parameter names -> the option that sets them (for messages from the library).
_OPTION_OF = {
    "in_shape": "--in-shape",
    "kernel_size": "--kernel",
    "weight_shape": "--kernel",
    "stride": "--stride",
    "padding": "--padding",
    "dilation": "--dilation",
    "groups": "--groups",
    "in_channels": "--in-channels",
    "out_channels": "--out-channels",
    "channel counts": "--in-channels/--out-channels",
    "padding_mode": "--padding-mode",
    "output_padding": "--output-padding",
    "output_size": "--output-padding",
    "dtype": "--dtype",
    "max_bytes": "--max-bytes",
    "weight": "--weight",
}
_PARAM_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _OPTION_OF), key=len, reverse=True)) + r")\b")


class CommandError(Exception):
    """A problem to report in one line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"convmat: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- #
# option types (stdlib only: they run while parsing)
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
            f"expected an integer, lo:hi, or one of {', '.join(PADDING_KEYWORDS)}; got {text!r}"
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
    """'2000000000', '2e9', '2GB', '1.5GiB' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes such as 2000000000, 2e9, 2GB or 1.5GiB, got {text!r}"
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


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


def _add_geometry(p, *, kernel_required=True):
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
    g.add_argument("--output-padding", type=_output_padding_token, nargs="+", default=["restore"], metavar="A",
                   help="output_padding of the transposed convolution, 0 <= A < max(stride, dilation), "
                   "one int or one per axis; 'restore' (default) picks the one that gives back --in-shape")


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convmat",
        description="Convolution layers as explicit sparse CSR matrices: Y = C @ X is PyTorch's "
        "convolution (cross-correlation), C.T the transposed convolution.",
        epilog="Run 'convmat COMMAND --help' for the options of each command. Exit status: 0 success, "
        "1 a check failed, 2 bad arguments or a matrix over the size limit.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "shape", formatter_class=fmt, epilog=GEOMETRY_HELP,
        help="print output shapes, matrix sizes and the transposed-conv recipe (builds nothing)",
        description=_wrap(
            "Print the forward and transposed output shapes, the matrices' shapes, nnz, bytes "
            "(float32 and float64), index dtype and density, and the recipe of the transposed convolution "
            "as a stride-1 convolution. Nothing is built: every number comes from the index arithmetic."
        ),
    )
    _add_geometry(p)
    p.set_defaults(func=_cmd_shape)

    p = sub.add_parser(
        "build", formatter_class=fmt, epilog=GEOMETRY_HELP,
        help="build the CSR matrix and save it with scipy.sparse.save_npz",
        description=_wrap(
            "Build the matrix C (or the transposed convolution's matrix, --transposed) and save "
            "it with scipy.sparse.save_npz; load it with scipy.sparse.load_npz. Matrices larger than the "
            "available memory (or --max-bytes) are refused before anything is allocated."
        ),
    )
    _add_geometry(p, kernel_required=False)
    p.add_argument("--transposed", action="store_true",
                   help="the transposed convolution taking the forward output back (same weight tensor)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weight", metavar="W.npy",
                   help="weight from a .npy file, shape (C_out, C_in/groups, *kernel); it sets --kernel "
                   "and the channel counts when those are not given")
    w.add_argument("--seed", type=int, default=0,
                   help="random weight numpy.random.default_rng(SEED).standard_normal(weight_shape), "
                   "then cast to --dtype (default 0; used when --weight is not given)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="matrix values (default: float32 for --seed, the file's dtype for --weight)")
    p.add_argument("--max-bytes", type=_byte_size, default=None, metavar="BYTES",
                   help="size limit, e.g. 8GB or 2e9 (default: the available memory)")
    p.add_argument("-o", "--output", required=True, metavar="C.npz", help="where to save the matrix")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "check", formatter_class=fmt, epilog=GEOMETRY_HELP,
        help="run the adjoint test, the recipe identity and comparisons with PyTorch",
        description=_wrap(
            "Run convmat.checks.check_geometry on this geometry with a random weight and print "
            "one row per check: name, value, tolerance, pass. Exit status 0 when every row passes, "
            "1 otherwise."
        ),
    )
    _add_geometry(p)
    p.add_argument("--transposed", action="store_true", help="check the transposed convolution")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weight and vectors (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the comparisons with PyTorch")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "draw", formatter_class=fmt, epilog=GEOMETRY_HELP,
        help="draw the matrix, the convolution arithmetic (PNG + GIF) and the transposed-conv recipe",
        description=_wrap(
            "Write pictures of this geometry, all derived from the matrices: matrix.png and "
            "matrix_T.png (the non-zeros of C and of the transposed convolution's matrix), conv_frame.png "
            "and conv.gif (one frame per output pixel: the input cells each row of C reads), and "
            "recipe.png (the transposed convolution as a scatter and as zero insertion + padding + "
            "flipped kernel). Frames show one channel of 1-D or 2-D geometries."
        ),
    )
    _add_geometry(p)
    p.add_argument("-o", "--out", default="out", metavar="DIR", help="output directory (default out)")
    p.add_argument("--max-frames", type=_positive, default=64, metavar="F",
                   help="animate at most F output pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weight of the matrix plots")
    p.set_defaults(func=_cmd_draw)
    return parser


# --------------------------------------------------------------------------- #
# geometry options -> convmat arguments
# --------------------------------------------------------------------------- #
def _per_axis(values, option, ndim):
    """One value for every axis, or one per axis; else a CommandError naming the option."""
    if len(values) == 1:
        return tuple(values) * ndim
    if len(values) != ndim:
        raise CommandError(
            f"argument {option}: expected 1 value or {ndim} (one per axis of --in-shape), "
            f"got {len(values)}: {' '.join(map(str, values))}"
        )
    return tuple(values)


def _padding(tokens, ndim):
    """The --padding tokens as convmat's padding argument (a string, or one (lo, hi) per axis)."""
    keywords = [t for t in tokens if isinstance(t, str)]
    if keywords:
        if len(tokens) != 1:
            raise CommandError(f"argument --padding: {keywords[0]!r} must be the only value, got {len(tokens)}")
        return keywords[0]
    pads = _per_axis(tokens, "--padding", ndim)
    return tuple(p if isinstance(p, tuple) else (p, p) for p in pads)


def _geometry(args, weight_shape=None):
    """The keyword arguments of conv_plan, and the forward weight shape."""
    in_shape = tuple(args.in_shape)
    ndim = len(in_shape)
    if weight_shape is not None:  # build --weight: the file sets what the options leave open
        if len(weight_shape) != ndim + 2:
            raise CommandError(
                f"argument --weight: expected {ndim + 2} axes (C_out, C_in/groups, *kernel) for "
                f"--in-shape {' '.join(map(str, in_shape))}, got shape {tuple(weight_shape)}"
            )
        expected = {
            "--out-channels": (args.out_channels, weight_shape[0]),
            "--in-channels": (args.in_channels, weight_shape[1] * args.groups),
            "--kernel": (None if args.kernel is None else _per_axis(args.kernel, "--kernel", ndim),
                         tuple(weight_shape[2:])),
        }
        for option, (given, implied) in expected.items():
            if given is not None and given != implied:
                raise CommandError(
                    f"argument --weight: shape {tuple(weight_shape)} implies {option} {implied} "
                    f"(with --groups {args.groups}), but {option} {given} was given"
                )
        c_in, c_out, kernel = expected["--in-channels"][1], weight_shape[0], tuple(weight_shape[2:])
    else:
        if args.kernel is None:
            raise CommandError("argument --kernel: required (or give --weight)")
        kernel = _per_axis(args.kernel, "--kernel", ndim)
        c_in = 1 if args.in_channels is None else args.in_channels
        c_out = 1 if args.out_channels is None else args.out_channels
    for option, channels in (("--in-channels", c_in), ("--out-channels", c_out)):
        if channels % args.groups:
            raise CommandError(f"argument {option}: {channels} is not divisible by --groups {args.groups}")
    kwargs = dict(
        stride=_per_axis(args.stride, "--stride", ndim),
        padding=_padding(args.padding, ndim),
        dilation=_per_axis(args.dilation, "--dilation", ndim),
        groups=args.groups,
        padding_mode=args.padding_mode,
    )
    return (c_out, c_in // args.groups) + kernel, in_shape, kwargs


def _plans(args, weight_shape=None):
    """Forward plan, transposed plan (the one taking the forward output back), output paddings."""
    from convmat import conv_plan, conv_transpose_plan
    from convmat.geometry import restoring_output_padding

    weight_shape, in_shape, kw = _geometry(args, weight_shape)
    fwd = conv_plan(weight_shape, in_shape, **kw)
    g = fwd.geometry
    restoring = restoring_output_padding(
        in_shape, g.kernel_size, stride=g.stride, padding=g.padding, dilation=g.dilation
    )
    tokens = args.output_padding
    if "restore" in tokens:
        if len(tokens) != 1:
            raise CommandError("argument --output-padding: 'restore' must be the only value")
        out_pad = restoring
    else:
        out_pad = _per_axis(tokens, "--output-padding", len(in_shape))
    trans = conv_transpose_plan(
        weight_shape, g.out_shape, stride=g.stride, padding=g.padding, output_padding=out_pad,
        dilation=g.dilation, groups=g.groups,
    )
    return fwd, trans, out_pad, restoring


# --------------------------------------------------------------------------- #
# output helpers
# --------------------------------------------------------------------------- #
def _human(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def _shape(t) -> str:
    return str(tuple(int(v) for v in t))


def _table(rows, out=None):
    """Print rows of strings as left-aligned columns, two spaces apart."""
    out = sys.stdout if out is None else out
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows)))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _size_rows(plans):
    rows = [
        ["matrix shape"] + [f"{p.shape[0]:,} x {p.shape[1]:,}" for p in plans],
        ["nnz"] + [f"{p.nnz:,}" for p in plans],
        ["density"] + [f"{100 * p.density():.4g}%" for p in plans],
        ["index dtype"] + [str(p.index_dtype) for p in plans],
    ]
    for dt in ("float32", "float64"):
        rows.append([f"bytes ({dt})"] + [f"{_human(p.nbytes(dt))} ({p.nbytes(dt):,} B)" for p in plans])
    return rows


# --------------------------------------------------------------------------- #
# subcommands
# --------------------------------------------------------------------------- #
def _cmd_shape(args) -> int:
    fwd, trans, out_pad, restoring = _plans(args)
    g = fwd.geometry
    nd = g.ndim
    recipe_pad = trans.geometry.recipe_padding
    print(
        f"conv{nd}d: in_shape {_shape(g.in_shape)}, kernel {_shape(g.kernel_size)}, stride {_shape(g.stride)}, "
        f"padding {g.padding} (lo, hi), dilation {_shape(g.dilation)}, groups {g.groups}, "
        f"padding_mode {g.padding_mode!r}"
    )
    print()
    _table([
        ["weight", f"{_shape(fwd.weight_shape)}  (C_out, C_in/groups, *k); the transposed conv uses the same tensor"],
        ["forward output", f"{_shape(fwd.output_shape)}  conv{nd}d {_shape(fwd.input_shape)} -> {_shape(fwd.output_shape)}"],
        ["transposed output", f"{_shape(trans.output_shape)}  conv_transpose{nd}d {_shape(trans.input_shape)} -> "
                              f"{_shape(trans.output_shape)}, output_padding {_shape(out_pad)}"],
    ])
    print()
    _table([["", "forward C", "transposed T"]] + _size_rows([fwd, trans]))
    if out_pad == restoring and g.padding_mode == "zeros":
        print("T = C.T exactly (the output_padding restores the input).")
    elif out_pad != restoring:
        print(f"T is the transpose of the forward convolution on {_shape(trans.output_shape[1:])}, not of C "
              f"(output_padding {_shape(restoring)} would restore {_shape(g.in_shape)}).")
    if g.padding_mode != "zeros":
        print(f"padding_mode {g.padding_mode!r}: C.T (the adjoint) folds the border back; the transposed "
              f"convolution T pads with zeros, as PyTorch's ConvTranspose does.")
    print()
    print("transposed convolution as a stride-1 convolution (T = K_flip . P . Z):")
    _table([
        ["  zeros inserted between samples (s-1)", _shape(s - 1 for s in g.stride)],
        ["  padding (e-1-lo, e-1-hi+a) per axis", str(recipe_pad) + "  (negative = crop)"],
        ["  output_padding used", _shape(out_pad)],
        ["  output_padding restoring the input", f"{_shape(restoring)}  (allowed: 0 <= a < max(s, d) = "
                                                 f"{_shape(max(s, d) for s, d in zip(g.stride, g.dilation))})"],
        ["  kernel", "flipped spatially, channel axes swapped within each group; stride 1, same dilation"],
    ])
    return 0


def _cmd_build(args) -> int:
    import numpy as np
    import scipy.sparse as sp

    weight = None
    if args.weight is not None:
        try:
            weight = np.load(args.weight, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CommandError(f"argument --weight: cannot read {args.weight!r}: {exc}") from None
    fwd, trans, out_pad, _ = _plans(args, None if weight is None else weight.shape)
    plan = trans if args.transposed else fwd
    if args.transposed and args.padding_mode != "zeros":
        raise CommandError(
            f"argument --transposed: the transposed convolution pads with zeros only (as PyTorch's "
            f"ConvTranspose), got --padding-mode {args.padding_mode}; for the adjoint of this convolution "
            f"build C without --transposed and use C.T"
        )
    if weight is None:
        dtype = args.dtype or "float32"
        weight = np.random.default_rng(args.seed).standard_normal(fwd.weight_shape).astype(dtype)
        source = f"random normal, seed {args.seed}"
    else:
        dtype = args.dtype
        source = args.weight
    t0 = time.perf_counter()
    C = plan.build(weight, dtype=dtype, max_bytes=args.max_bytes)
    seconds = time.perf_counter() - t0
    try:
        sp.save_npz(args.output, C, compressed=False)
    except OSError as exc:
        raise CommandError(f"argument --output: cannot write {args.output!r}: {exc}") from None
    g = fwd.geometry
    nd = g.ndim
    kind = (f"conv_transpose{nd}d, output_padding {_shape(out_pad)}" if args.transposed else f"conv{nd}d")
    nbytes = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    _table([
        ["matrix", f"{kind}: {_shape(plan.input_shape)} -> {_shape(plan.output_shape)}"],
        ["weight", f"{_shape(weight.shape)} {weight.dtype} ({source})"],
        ["shape", f"{C.shape[0]:,} x {C.shape[1]:,}"],
        ["nnz", f"{C.nnz:,}"],
        ["dtype", f"{C.dtype} values, {C.indices.dtype} indices"],
        ["bytes", f"{_human(nbytes)} ({nbytes:,} B)"],
        ["build time", f"{seconds:.3f} s"],
        ["saved", args.output],
    ])
    return 0


def _cmd_check(args) -> int:
    try:
        from convmat.checks import check_geometry
    except ImportError as exc:
        raise CommandError(f"'convmat check' needs convmat.checks, which cannot be imported: {exc}") from None
    fwd, trans, out_pad, _ = _plans(args)
    g = fwd.geometry
    if args.transposed:
        # The transposed convolution: its input is the forward output; same weight tensor.
        in_shape, kw = g.out_shape, dict(transposed=True, output_padding=out_pad)
    else:
        in_shape, kw = g.in_shape, {}
    t0 = time.perf_counter()
    rows = check_geometry(
        fwd.weight_shape, in_shape, stride=g.stride, padding=g.padding, dilation=g.dilation, groups=g.groups,
        padding_mode=g.padding_mode, seed=args.seed, torch_compare=not args.no_torch, **kw,
    )
    seconds = time.perf_counter() - t0
    plan = trans if args.transposed else fwd
    kind = f"conv_transpose{g.ndim}d" if args.transposed else f"conv{g.ndim}d"
    print(f"{kind}: {_shape(plan.input_shape)} -> {_shape(plan.output_shape)}, weight {_shape(fwd.weight_shape)}, "
          f"seed {args.seed}")
    table = [["check", "value", "tolerance", "result"]]
    for name, value, tol, passed in rows:
        table.append([str(name), _fmt(value), "-" if tol is None else _fmt(tol), "pass" if passed else "FAIL"])
    _table(table)
    failed = sum(1 for row in rows if not row[3])
    print(f"{len(rows) - failed} of {len(rows)} passed in {seconds:.2f} s")
    return 0 if failed == 0 else 1


def _cmd_draw(args) -> int:
    import os

    import numpy as np

    from convmat import conv_matrix, conv_transpose_matrix
    from convmat import viz

    fwd, trans, out_pad, _ = _plans(args)
    g = fwd.geometry
    os.makedirs(args.out, exist_ok=True)
    written = []

    def out(name):
        path = os.path.join(args.out, name)
        written.append(path)
        return path

    weight = np.random.default_rng(args.seed).standard_normal(fwd.weight_shape)
    kw = dict(stride=g.stride, dilation=g.dilation, groups=g.groups)
    C = conv_matrix(weight, g.in_shape, padding=g.padding, padding_mode=g.padding_mode, **kw)
    viz.plot_matrix(C, in_shape=fwd.input_shape, out_shape=fwd.output_shape, title="C", path=out("matrix.png"))
    if g.padding_mode == "zeros":
        T = conv_transpose_matrix(weight, g.out_shape, padding=g.padding, output_padding=out_pad, **kw)
        viz.plot_matrix(T, in_shape=trans.input_shape, out_shape=trans.output_shape, title="transposed",
                        path=out("matrix_T.png"))
    else:  # PyTorch's ConvTranspose pads with zeros only; the exact adjoint is C.T
        viz.plot_matrix(C.T.tocsr(), in_shape=fwd.output_shape, out_shape=fwd.input_shape, title="C.T",
                        path=out("matrix_T.png"))
    skipped = []
    if g.ndim <= 2:
        frame_kw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation, padding_mode=g.padding_mode)
        frames = viz.conv_arithmetic_frames(g.in_shape, g.kernel_size, **frame_kw)
        viz.draw_frame(frames[len(frames) // 2], path=out("conv_frame.png"))
        shown = frames[: args.max_frames]
        viz.save_gif(viz.frame_images(shown), out("conv.gif"))
        if len(shown) < len(frames):
            skipped.append(f"conv.gif shows the first {len(shown)} of {len(frames)} output pixels (--max-frames)")
        if g.padding_mode == "zeros":
            viz.transposed_two_ways(g.out_shape, g.kernel_size, stride=g.stride, padding=g.padding,
                                    output_padding=out_pad, dilation=g.dilation, path=out("recipe.png"))
        else:
            skipped.append("recipe.png: the zero-insertion recipe is the transpose of zero padding only")
    else:
        skipped.append(f"conv_frame.png, conv.gif, recipe.png: frames are drawn for 1-D and 2-D, this is {g.ndim}-D")
    for path in written:
        print(f"wrote {path}")
    for note in skipped:
        print(f"not drawn: {note}")
    return 0


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return f"{float(value):.3g}"
    return str(value)


# --------------------------------------------------------------------------- #
def _library_message(exc: BaseException) -> str:
    """A convmat error as one line, prefixed with the option that set the parameter it names."""
    message = " ".join(str(exc).split())
    match = _PARAM_RE.search(message)
    if match:
        return f"argument {_OPTION_OF[match.group(1)]}: {message}"
    return message


def main(argv=None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a check failed, 2 an error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or an argparse error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"convmat: error: {exc}", file=sys.stderr)
    except MemoryError as exc:  # convmat.MatrixTooLargeError: refused before allocating
        message = " ".join(str(exc).split()) or "out of memory"
        print(f"convmat: error: {message} (convmat build: --max-bytes raises the limit)", file=sys.stderr)
    except (ValueError, TypeError) as exc:
        print(f"convmat: error: {_library_message(exc)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
