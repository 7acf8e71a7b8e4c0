"""The subcommands ``shape``, ``build`` and ``check``, and the geometry options as convmat arguments."""

from __future__ import annotations

import math
import os
import sys
import time

from .parser import CommandError

__all__ = ["cmd_shape", "cmd_build", "cmd_check", "plans", "forward_geometry"]

#: ``convmat check`` holds up to about this many float64 copies of the checked matrix at once
#: (the matrix, its transpose, the recipe's factors and product): tracemalloc measured peaks of
#: 3.9x to 7.4x the matrix's bytes on 1-D and 2-D geometries, forward and transposed, with groups.
CHECK_COPIES = 8


# --------------------------------------------------------------------------- #
# geometry options -> convmat arguments
# --------------------------------------------------------------------------- #
def _per_axis(values, option, ndim):
    """One value for every axis, or one per axis; else a CommandError naming the option."""
    if len(values) == 1:
        return tuple(values) * ndim
    if len(values) != ndim:
        allowed = "1 value (--in-shape has 1 axis)" if ndim == 1 else f"1 value or {ndim} (one per axis of --in-shape)"
        raise CommandError(option, f"expected {allowed}, got {len(values)}: {' '.join(map(str, values))}")
    return tuple(values)


def _padding(tokens, ndim):
    """The --padding tokens as convmat's padding argument (a string, or one (lo, hi) per axis)."""
    keywords = [t for t in tokens if isinstance(t, str)]
    if keywords:
        if len(tokens) != 1:
            raise CommandError("--padding", f"{keywords[0]!r} must be the only value, got {len(tokens)}")
        return keywords[0]
    pads = _per_axis(tokens, "--padding", ndim)
    return tuple(p if isinstance(p, tuple) else (p, p) for p in pads)


def forward_geometry(args, weight_shape=None):
    """The forward weight shape, the spatial input shape and the keyword arguments of conv_plan."""
    in_shape = tuple(args.in_shape)
    ndim = len(in_shape)
    if weight_shape is not None:  # build --weight: the file sets what the options leave open
        if len(weight_shape) != ndim + 2:
            raise CommandError("--weight", f"expected {ndim + 2} axes (C_out, C_in/groups, *kernel) for "
                                           f"--in-shape {' '.join(map(str, in_shape))}, got shape {tuple(weight_shape)}")
        expected = {
            "--out-channels": (args.out_channels, weight_shape[0]),
            "--in-channels": (args.in_channels, weight_shape[1] * args.groups),
            "--kernel": (None if args.kernel is None else _per_axis(args.kernel, "--kernel", ndim),
                         tuple(weight_shape[2:])),
        }
        for option, (given, implied) in expected.items():
            if given is not None and given != implied:
                raise CommandError("--weight", f"shape {tuple(weight_shape)} implies {option} {implied} "
                                               f"(with --groups {args.groups}), but {option} {given} was given")
        c_in, c_out, kernel = expected["--in-channels"][1], weight_shape[0], tuple(weight_shape[2:])
    else:
        if args.kernel is None:
            raise CommandError("--kernel", "required (or give --weight)")
        kernel = _per_axis(args.kernel, "--kernel", ndim)
        c_in = 1 if args.in_channels is None else args.in_channels
        c_out = 1 if args.out_channels is None else args.out_channels
    for option, channels in (("--in-channels", c_in), ("--out-channels", c_out)):
        if channels % args.groups:
            raise CommandError(option, f"{channels} is not divisible by --groups {args.groups}")
    kwargs = dict(
        stride=_per_axis(args.stride, "--stride", ndim),
        padding=_padding(args.padding, ndim),
        dilation=_per_axis(args.dilation, "--dilation", ndim),
        groups=args.groups,
        padding_mode=args.padding_mode,
    )
    return (c_out, c_in // args.groups) + kernel, in_shape, kwargs


def plans(args, weight_shape=None):
    """Forward plan, transposed plan (the one taking the forward output back), output paddings."""
    from convmat import conv_plan, conv_transpose_plan
    from convmat.geometry import restoring_output_padding

    if args.output_padding is not None and not getattr(args, "transposed", True):
        raise CommandError("--output-padding", f"sets the transposed convolution's output_padding; "
                                               f"add --transposed to {args.command} the transposed convolution")
    if getattr(args, "transposed", False) and args.padding_mode != "zeros":
        raise CommandError("--transposed", f"the transposed convolution pads with zeros only (as PyTorch's "
                                           f"ConvTranspose), got --padding-mode {args.padding_mode}; for the "
                                           f"adjoint of this convolution use C.T of the matrix built without "
                                           f"--transposed")
    weight_shape, in_shape, kw = forward_geometry(args, weight_shape)
    fwd = conv_plan(weight_shape, in_shape, **kw)
    g = fwd.geometry
    restoring = restoring_output_padding(
        in_shape, g.kernel_size, stride=g.stride, padding=g.padding, dilation=g.dilation
    )
    tokens = args.output_padding or ["restore"]
    if "restore" in tokens:
        if len(tokens) != 1:
            raise CommandError("--output-padding", "'restore' must be the only value")
        out_pad = restoring
    else:
        out_pad = _per_axis(tokens, "--output-padding", len(in_shape))
    trans = conv_transpose_plan(
        weight_shape, g.out_shape, stride=g.stride, padding=g.padding, output_padding=out_pad,
        dilation=g.dilation, groups=g.groups,
    )
    return fwd, trans, out_pad, restoring


def host_limit(max_bytes):
    """The memory limit of a subcommand and what it is: ``--max-bytes``, else the builder's default."""
    from convmat.memory import host_memory_limit

    if max_bytes is not None:
        return max_bytes, "the limit --max-bytes"
    return host_memory_limit()


def random_weight(shape, dtype, seed):
    """``default_rng(seed).standard_normal(shape)`` cast to ``dtype``; refused before drawing if it cannot fit.

    The limit is the available memory (``--max-bytes`` bounds the matrix, which the library checks).
    """
    import numpy as np

    need = math.prod(shape) * (8 + np.dtype(dtype).itemsize)
    limit, what = host_limit(None)
    if limit is not None and need > limit:
        raise CommandError("--in-channels/--out-channels", f"the random weight of shape {tuple(shape)} would take "
                                                           f"{human(need)} while drawn, more than {what} "
                                                           f"({human(limit)})")
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype, copy=False)


# --------------------------------------------------------------------------- #
# output helpers
# --------------------------------------------------------------------------- #
def human(nbytes: int) -> str:
    """Bytes in decimal units: '172 B', '23.3 kB', ..., '152.0 EB'."""
    value = float(nbytes)
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    for unit in units:
        if value < 1000 or unit == units[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def shape_text(t) -> str:
    return str(tuple(int(v) for v in t))


def table(rows, out=None):
    """Print rows of strings as left-aligned columns, two spaces apart."""
    out = sys.stdout if out is None else out
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows)))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _size_rows(plan_list):
    rows = [
        ["matrix shape"] + [f"{p.shape[0]:,} x {p.shape[1]:,}" for p in plan_list],
        ["nnz"] + [f"{p.nnz:,}" for p in plan_list],
        ["density"] + [f"{100 * p.density():.4g}%" for p in plan_list],
        ["index dtype"] + [str(p.index_dtype) for p in plan_list],
    ]
    for dt in ("float32", "float64"):
        rows.append([f"bytes ({dt})"] + [f"{human(p.nbytes(dt))} ({p.nbytes(dt):,} B)" for p in plan_list])
    return rows


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return f"{float(value):.3g}"
    return str(value)


# --------------------------------------------------------------------------- #
# shape
# --------------------------------------------------------------------------- #
def cmd_shape(args) -> int:
    fwd, trans, out_pad, restoring = plans(args)
    g = fwd.geometry
    nd = g.ndim
    recipe_pad = trans.geometry.recipe_padding
    print(
        f"conv{nd}d: in_shape {shape_text(g.in_shape)}, kernel {shape_text(g.kernel_size)}, "
        f"stride {shape_text(g.stride)}, padding {g.padding} (lo, hi), dilation {shape_text(g.dilation)}, "
        f"groups {g.groups}, padding_mode {g.padding_mode!r}"
    )
    print()
    table([
        ["weight", f"{shape_text(fwd.weight_shape)}  (C_out, C_in/groups, *k); the transposed conv uses the same tensor"],
        ["forward output", f"{shape_text(fwd.output_shape)}  conv{nd}d {shape_text(fwd.input_shape)} -> "
                           f"{shape_text(fwd.output_shape)}"],
        ["transposed output", f"{shape_text(trans.output_shape)}  conv_transpose{nd}d {shape_text(trans.input_shape)} "
                              f"-> {shape_text(trans.output_shape)}, output_padding {shape_text(out_pad)}"],
    ])
    print()
    table([["", "forward C", "transposed T"]] + _size_rows([fwd, trans]))
    if out_pad == restoring and g.padding_mode == "zeros":
        print("T = C.T exactly (the output_padding restores the input).")
    elif out_pad != restoring:
        print(f"T is the transpose of the forward convolution on {shape_text(trans.output_shape[1:])}, not of C "
              f"(output_padding {shape_text(restoring)} would restore {shape_text(g.in_shape)}).")
    if g.padding_mode != "zeros":
        print(f"padding_mode {g.padding_mode!r}: C.T (the adjoint) folds the border back; the transposed "
              f"convolution T pads with zeros, as PyTorch's ConvTranspose does.")
    print()
    print("transposed convolution as a stride-1 convolution (T = K_flip . P . Z):")
    table([
        ["  zeros inserted between samples (s-1)", shape_text(s - 1 for s in g.stride)],
        ["  padding (e-1-lo, e-1-hi+a) per axis", str(recipe_pad) + "  (negative = crop)"],
        ["  output_padding used", shape_text(out_pad)],
        ["  output_padding restoring the input", f"{shape_text(restoring)}  (allowed: 0 <= a < max(s, d) = "
                                                 f"{shape_text(max(s, d) for s, d in zip(g.stride, g.dilation))})"],
        ["  kernel", "flipped spatially, channel axes swapped within each group; stride 1, same dilation"],
    ])
    return 0


# --------------------------------------------------------------------------- #
# build
# --------------------------------------------------------------------------- #
def _load_weight(path):
    """A .npy file as an array; every way it can fail is a CommandError naming --weight."""
    import numpy as np

    if os.path.isdir(path):
        raise CommandError("--weight", f"{path!r} is a directory, not a .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            if magic.startswith(b"PK"):
                raise CommandError("--weight", f"{path!r} is an .npz archive (numpy.savez); give one array "
                                               f"saved with numpy.save (.npy)")
            if magic != b"\x93NUMPY":
                raise CommandError("--weight", f"{path!r} is not a .npy file (numpy.save): it does not start "
                                               f"with the .npy magic bytes")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            data_start = f.tell()
        if dtype.hasobject:
            raise CommandError("--weight", f"{path!r} holds Python objects (dtype {dtype}); convmat reads "
                                           f"numeric arrays only, never pickles")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        have = os.path.getsize(path) - data_start
        if have < need:
            raise CommandError("--weight", f"{path!r} is truncated: its header says shape {shape} {dtype} "
                                           f"({need:,} bytes), the file holds {have:,}")
        return np.load(path, allow_pickle=False)
    except CommandError:
        raise
    except OSError as exc:
        raise CommandError("--weight", f"cannot read {path!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # a damaged header: numpy raises ValueError, EOFError, SyntaxError, ...
        raise CommandError("--weight", f"cannot read {path!r} as a .npy file: {exc}") from None


def output_file(text):
    """The path ``build -o`` writes (``.npz`` added when missing), checked before anything is built."""
    if not text:
        raise CommandError("--output", "expected a file name, got ''")
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        raise CommandError("--output", f"{text!r} is a directory; give a file name such as "
                                       f"{os.path.join(text, 'C.npz')!r}")
    path = text if text.endswith(".npz") else text + ".npz"
    if os.path.isdir(path):
        raise CommandError("--output", f"{path!r} is a directory; give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise CommandError("--output", f"cannot write {path!r}: the directory {folder!r} does not exist")
    return path


def _save(path, C):
    """Write C with scipy.sparse.save_npz to exactly ``path``; no partial file is left on failure."""
    import scipy.sparse as sp

    existed = os.path.exists(path)
    try:
        with open(path, "wb") as f:  # a file object: numpy writes exactly this name
            sp.save_npz(f, C, compressed=False)
    except OSError as exc:
        if not existed and os.path.isfile(path):
            os.remove(path)
        raise CommandError("--output", f"cannot write {path!r}: {exc.strerror or exc}") from None


def cmd_build(args) -> int:
    path = output_file(args.output)
    weight = None if args.weight is None else _load_weight(args.weight)
    fwd, trans, out_pad, _ = plans(args, None if weight is None else weight.shape)
    plan = trans if args.transposed else fwd
    if weight is None:
        dtype = args.dtype or "float32"
        weight = random_weight(fwd.weight_shape, dtype, args.seed)
        source = f"random normal, seed {args.seed}"
    else:
        dtype = args.dtype
        source = args.weight
    t0 = time.perf_counter()
    C = plan.build(weight, dtype=dtype, max_bytes=args.max_bytes)
    seconds = time.perf_counter() - t0
    _save(path, C)
    nd = fwd.geometry.ndim
    kind = f"conv_transpose{nd}d, output_padding {shape_text(out_pad)}" if args.transposed else f"conv{nd}d"
    nbytes = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    table([
        ["matrix", f"{kind}: {shape_text(plan.input_shape)} -> {shape_text(plan.output_shape)}"],
        ["weight", f"{shape_text(weight.shape)} {weight.dtype} ({source})"],
        ["shape", f"{C.shape[0]:,} x {C.shape[1]:,}"],
        ["nnz", f"{C.nnz:,}"],
        ["dtype", f"{C.dtype} values, {C.indices.dtype} indices"],
        ["bytes", f"{human(nbytes)} ({nbytes:,} B)"],
        ["build time", f"{seconds:.3f} s"],
        ["saved", path],
    ])
    return 0


# --------------------------------------------------------------------------- #
# check
# --------------------------------------------------------------------------- #
def _check_size(args, plan, weight_shape):
    """Refuse (naming check's --max-bytes) a geometry whose checks would not fit, before building."""
    need = CHECK_COPIES * plan.nbytes("float64") + 2 * 8 * math.prod(weight_shape)
    limit, what = host_limit(args.max_bytes)
    if limit is not None and need > limit:
        raise CommandError("--max-bytes", f"checking the matrix of shape {plan.shape} with {plan.nnz:,} non-zeros "
                                          f"holds about {human(need)} ({CHECK_COPIES} float64 copies and the "
                                          f"weight), more than {what} ({human(limit)}); check a smaller "
                                          f"geometry or raise --max-bytes")


def cmd_check(args) -> int:
    from convmat.checks import check_geometry

    fwd, trans, out_pad, _ = plans(args)
    g = fwd.geometry
    plan = trans if args.transposed else fwd
    _check_size(args, plan, fwd.weight_shape)
    t0 = time.perf_counter()
    rows = check_geometry(plan, seed=args.seed, torch_compare=not args.no_torch)
    seconds = time.perf_counter() - t0
    kind = f"conv_transpose{g.ndim}d" if args.transposed else f"conv{g.ndim}d"
    print(f"{kind}: {shape_text(plan.input_shape)} -> {shape_text(plan.output_shape)}, "
          f"weight {shape_text(fwd.weight_shape)}, seed {args.seed}")
    body = [["check", "value", "tolerance", "result"]]
    for name, value, tol, passed in rows:
        body.append([str(name), _fmt(value), "-" if tol is None else _fmt(tol), "pass" if passed else "FAIL"])
    table(body)
    failed = sum(1 for row in rows if not row[3])
    print(f"{len(rows) - failed} of {len(rows)} passed in {seconds:.2f} s")
    return 0 if failed == 0 else 1
