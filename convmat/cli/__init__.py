"""The ``convmat`` command line: sizes, matrices, checks and pictures of one convolution layer.

Four subcommands share one set of geometry options, which describe a
*forward* convolution (PyTorch's ``ConvNd``)::

    convmat shape --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --in-channels 3 --out-channels 8
    convmat build --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --seed 0 -o C.npz
    convmat check --in-shape 32 32 --kernel 3 --stride 2 --padding 1 --transposed
    convmat draw --in-shape 5 5 --kernel 3 --stride 2 --padding 1 -o pictures

``shape`` prints sizes without building anything, ``build`` writes the CSR
matrix with :func:`scipy.sparse.save_npz`, ``check`` runs
:func:`convmat.checks.check_geometry`, ``draw`` writes pictures made by
:mod:`convmat.viz` (``--max-dense`` bounds what it draws entry by entry).
``--transposed`` means the transposed convolution (``ConvTransposeNd``) that
takes the forward output back to the input; it uses the same weight tensor.

Modules: :mod:`convmat.cli.parser` (options and their types),
:mod:`convmat.cli.commands` (options -> plans; ``shape``, ``build``,
``check``), :mod:`convmat.cli.draw`.  PyTorch is imported only by ``check``
(through convmat.checks), matplotlib and Pillow only by ``draw``.

Exit status: 0 success; 1 ``check`` found a failing row; 2 bad arguments, a
matrix over the size limit, or a file that cannot be read or written.  Every
failure is one line ``convmat: error: ...`` on stderr naming the option,
never a traceback.  (130 after Ctrl-C; 141, silently, when the reader of
stdout goes away, as in ``convmat shape ... | head -1``.)
"""

from __future__ import annotations

import re
import sys

from .parser import COMMANDS, CommandError, build_parser

__all__ = ["main", "build_parser", "CommandError"]

#: convmat parameter names -> the option that sets them (for errors raised by the library).
OPTION_OF = {
    "in_shape": "--in-shape",
    "kernel_size": "--kernel",
    "weight_shape": "--out-channels/--in-channels/--kernel",
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
    "seed": "--seed",
    "max_dense": "--max-dense",
}
#: With --weight, the weight file sets these.
_FROM_WEIGHT_FILE = ("weight", "weight_shape", "kernel_size", "in_channels", "out_channels", "channel counts")
# Fallback for library errors that do not carry ``.parameter`` yet: the first parameter name in the message.
_PARAM_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, OPTION_OF), key=len, reverse=True)) + r")\b")

#: What a bare ``convmat`` prints (stderr, exit status 2).
SHORT_USAGE = "usage: convmat {shape,build,check,draw} [options]   ('convmat COMMAND --help' lists them)\n" + "".join(
    f"  {name:<6} {summary}\n" for name, summary in COMMANDS.items()
) + "convmat: error: a command is required\n"


def _one_line(text) -> str:
    return " ".join(str(text).split())


def option_of(exc: BaseException, args=None) -> str | None:
    """The option that set the parameter a library error is about, or None.

    Reads ``exc.parameter`` (convmat's ParameterError / ParameterTypeError);
    errors without it fall back to the first parameter name in the message.
    """
    parameter = getattr(exc, "parameter", None)
    if parameter is None:
        match = _PARAM_RE.search(_one_line(exc))
        parameter = match.group(1) if match else None
    if parameter is None:
        return None
    if getattr(args, "weight", None) is not None and parameter in _FROM_WEIGHT_FILE:
        return "--weight"
    return OPTION_OF.get(parameter)


def _message(exc: BaseException, args) -> str:
    """One line for an exception raised while running a subcommand."""
    from convmat import MatrixTooLargeError

    text = _one_line(exc)
    if isinstance(exc, CommandError):
        return text
    if isinstance(exc, MatrixTooLargeError):  # refused before allocating
        if getattr(args, "max_bytes", False) is not False:
            return f"argument --max-bytes: {text}"
        return (f"argument --in-shape: {text} (convmat {args.command} needs the whole matrix: give a smaller "
                f"--in-shape or fewer channels)")
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + text if text else ''} (try a smaller geometry)"
    if isinstance(exc, (ValueError, TypeError)):
        option = option_of(exc, args)
        return f"argument {option}: {text}" if option else text
    if isinstance(exc, OSError):
        where = f"{exc.filename!r}: " if exc.filename else ""
        return f"{where}{exc.strerror or text}"
    return f"internal error ({type(exc).__name__}: {text}); please report it"


def _run(args) -> int:
    from .commands import cmd_build, cmd_check, cmd_shape
    from .draw import cmd_draw

    return {"shape": cmd_shape, "build": cmd_build, "check": cmd_check, "draw": cmd_draw}[args.command](args)


def main(argv=None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a check failed, 2 an error).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv:
        sys.stderr.write(SHORT_USAGE)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or an argparse error already printed in one line
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        sys.stderr.write(SHORT_USAGE)
        return 2
    try:
        status = _run(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
        return status
    except KeyboardInterrupt:
        print("convmat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (convmat ... | head): not an error of convmat
        _silence_stdout()
        return 141
    except Exception as exc:  # every failure: one line naming the option, never a traceback
        print(f"convmat: error: {_message(exc, args)}", file=sys.stderr)
        return 2


def _silence_stdout():
    """Point stdout at /dev/null, so that Python's flush at exit does not fail on the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured, replaced)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
