"""The command line never throws: bad invocations of every kind give exit 2 and one line naming the option.

Each case is run in-process through ``convmat.cli.main`` (fast); a few run
through the installed entry points (``python -m convmat`` and the ``convmat``
script) to prove that the real program behaves the same.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from convmat.cli import main

BIG = str(10**30)
G8 = ["--in-shape", "8", "--kernel", "3"]
G2D = ["--in-shape", "6", "6", "--kernel", "3"]


# --------------------------------------------------------------------------- #
# bad files, made once
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    good = np.ones((2, 1, 3), np.float32)

    def npy(name, array, **kw):
        np.save(d / name, array, **kw)
        return d / name

    paths = {
        "empty": d / "empty.npy",
        "magic_only": d / "magic.npy",
        "bad_header": d / "bad_header.npy",
        "text": d / "text.npy",
        "pickle": d / "list.pkl",
        "npz": d / "w.npz",
        "dir": d / "adir",
        "missing": d / "missing.npy",
        "object": npy("object.npy", np.array([1, "a", None], dtype=object), allow_pickle=True),
        "strings": npy("strings.npy", np.array([["ab", "cd", "ef"]])[None]),
        "bool": npy("bool.npy", np.ones((1, 1, 3), bool)),
        "datetime": npy("dt.npy", np.zeros((1, 1, 3), "datetime64[s]")),
        "structured": npy("rec.npy", np.zeros((1, 1, 3), [("a", "f4"), ("b", "i4")])),
        "scalar": npy("scalar.npy", np.float32(1.0)),
        "vector": npy("vector.npy", np.ones(3, np.float32)),
        "zero_channels": npy("zero.npy", np.ones((0, 1, 3), np.float32)),
        "five_axes": npy("five.npy", np.ones((1, 1, 3, 3, 3), np.float32)),
        "good": npy("good.npy", good),
    }
    paths["empty"].write_bytes(b"")
    paths["magic_only"].write_bytes(b"\x93NUMPY")
    paths["bad_header"].write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4,}    \n")
    paths["text"].write_text("1 2 3\n4 5 6\n")
    paths["pickle"].write_bytes(pickle.dumps([[1.0, 2.0, 3.0]]))
    np.savez(paths["npz"], w=good)
    paths["dir"].mkdir()
    full = paths["good"].read_bytes()
    paths["truncated"] = d / "truncated.npy"
    paths["truncated"].write_bytes(full[:-5])
    paths["header_only"] = d / "header_only.npy"
    paths["header_only"].write_bytes(full[: len(full) - good.nbytes])
    paths["a_file"] = d / "plain.txt"
    paths["a_file"].write_text("not a directory")
    return paths


# --------------------------------------------------------------------------- #
# the cases: (argv, option the message must name); {name} is a path from `files`
# --------------------------------------------------------------------------- #
def _weight(name, *extra):
    return ["build", "--in-shape", "8", "--weight", "{" + name + "}", "-o", "{out}", *extra]


WEIGHT_FILES = ["empty", "magic_only", "bad_header", "text", "pickle", "npz", "dir", "missing", "object",
                "strings", "datetime", "structured", "scalar", "vector", "zero_channels", "five_axes",
                "truncated", "header_only"]

CASES = [
    # --- weight files of every kind
    *[(_weight(name), "--weight") for name in WEIGHT_FILES],
    (["build", "--in-shape", "8", "8", "--weight", "{good}", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{good}", "--kernel", "5", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{good}", "--in-channels", "4", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{good}", "--out-channels", "3", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{good}", "--seed", "1", "-o", "{out}"], "--seed"),
    (["build", "--in-shape", "2", "--weight", "{good}", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{good}", "--dtype", "int8", "-o", "{out}"], "--dtype"),
    (["build", "--in-shape", "8", "--weight", "/dev/null", "-o", "{out}"], "--weight"),
    # --- output paths
    (["build", *G8, "-o", "{dir}"], "--output"),
    (["build", *G8, "-o", "{dir}/"], "--output"),
    (["build", *G8, "-o", "{dir}/no/such/C.npz"], "--output"),
    (["build", *G8, "-o", "{a_file}/C.npz"], "--output"),
    (["build", *G8, "-o", ""], "--output"),
    (["build", *G8, "-o", "/proc/convmat_C.npz"], "--output"),
    (["build", *G8], "--output"),
    (["draw", *G8, "-o", "{a_file}"], "--out"),
    (["draw", *G8, "-o", "{a_file}/sub"], "--out"),
    (["draw", *G8, "-o", "/proc/convmat_pictures"], "--out"),
    # --- absurd numbers
    *[(["shape", *G8, option, BIG], option) for option in ("--stride", "--padding", "--dilation")],
    (["shape", "--in-shape", BIG, "--kernel", "3"], "--in-shape"),
    (["shape", "--in-shape", "8", "--kernel", BIG], "--kernel"),
    (["shape", *G8, "--groups", BIG], "--groups"),
    (["shape", *G8, "--in-channels", BIG], "--in-channels"),
    (["shape", *G8, "--out-channels", BIG], "--out-channels"),
    (["shape", *G8, "--padding", f"1:{BIG}"], "--padding"),
    (["shape", *G8, "--stride", "2", "--output-padding", BIG], "--output-padding"),
    (["build", *G8, "--max-bytes", "1e400", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "1e-5", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "0", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "-1GB", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "3 parsecs", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "nan", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--max-bytes", "100", "-o", "{out}"], "--max-bytes"),
    (["build", "--in-shape", "100000000", "--kernel", "3", "--max-bytes", "1MB", "-o", "{out}"], "--max-bytes"),
    (["build", *G8, "--in-channels", "100000", "--out-channels", "100000", "-o", "{out}"], "--in-channels"),
    (["build", *G8, "--in-channels", "100000", "--out-channels", "100000", "--max-bytes", "1TB", "-o", "{out}"],
     "--in-channels"),
    (["check", *G8, "--in-channels", "3000", "--out-channels", "3000", "--max-bytes", "1GB", "--no-torch"],
     "--max-bytes"),
    (["check", *G8, "--max-bytes", "10", "--no-torch"], "--max-bytes"),
    (["draw", *G8, "--in-channels", "100000", "--out-channels", "100000", "-o", "{dir}/d"], "--in-channels"),
    (["draw", "--in-shape", "1000", "1000", "1000", "--kernel", "3", "-o", "{dir}/d"], "--in-shape"),
    (["build", *G8, "--seed", BIG + "x", "-o", "{out}"], "--seed"),
    # --- negative and zero values
    *[([cmd, "--in-shape", value, "--kernel", "3", *tail], "--in-shape")
      for cmd, tail in (("shape", []), ("build", ["-o", "{out}"])) for value in ("0", "-1")],
    *[(["shape", *G8, option, value], option)
      for option in ("--kernel", "--stride", "--dilation", "--groups", "--in-channels", "--out-channels")
      for value in ("0", "-2")],
    (["shape", *G8, "--padding", "-1"], "--padding"),
    (["shape", *G8, "--padding", "1:-1"], "--padding"),
    (["shape", *G8, "--output-padding", "-1"], "--output-padding"),
    *[([cmd, *G8, "--seed", "-1", *tail], "--seed")
      for cmd, tail in (("build", ["-o", "{out}"]), ("check", []), ("draw", ["-o", "{dir}/d"]))],
    (["draw", *G8, "--max-frames", "0", "-o", "{dir}/d"], "--max-frames"),
    (["draw", *G8, "--max-dense", "0", "-o", "{dir}/d"], "--max-dense"),
    (["draw", *G8, "--max-dense", "-5", "-o", "{dir}/d"], "--max-dense"),
    # --- not numbers
    *[(["shape", *G8, option, value], option)
      for option, value in (("--stride", "x"), ("--stride", "1.5"), ("--dilation", "nan"), ("--groups", "inf"),
                            ("--padding", "1:x"), ("--padding", "::"), ("--padding", "1:2:3"), ("--padding", "half"),
                            ("--output-padding", "foo"), ("--in-channels", "3.0"), ("--in-shape", "8e3"))],
    (["shape", "--in-shape", "8", "--kernel", "three"], "--kernel"),
    (["shape", "--in-shape", "--kernel", "3"], "--in-shape"),
    # --- conflicting options
    (["shape", *G8, "--padding", "same", "1"], "--padding"),
    (["shape", *G8, "--output-padding", "restore", "1"], "--output-padding"),
    (["shape", *G8, "--stride", "1", "2"], "--stride"),
    (["shape", *G2D, "--dilation", "1", "2", "3"], "--dilation"),
    (["shape", *G2D, "--padding", "1", "2", "3"], "--padding"),
    (["shape", *G2D, "--output-padding", "0", "0", "0"], "--output-padding"),
    (["shape", *G8, "--stride", "2", "--output-padding", "2"], "--output-padding"),
    (["shape", "--in-shape", "4", "--kernel", "7"], "--kernel"),
    (["shape", "--in-shape", "4", "--kernel", "3", "--dilation", "3"], "--kernel"),
    (["shape", *G8, "--in-channels", "3", "--groups", "2"], "--in-channels"),
    (["shape", *G8, "--out-channels", "3", "--groups", "2", "--in-channels", "2"], "--out-channels"),
    (["shape", *G8, "--padding", "8", "--padding-mode", "reflect"], "--padding"),
    (["shape", *G8, "--padding", "9", "--padding-mode", "circular"], "--padding"),
    (["shape", *G8, "--padding-mode", "mirror"], "--padding-mode"),
    (["build", *G8, "--padding", "1", "--padding-mode", "reflect", "--transposed", "-o", "{out}"], "--transposed"),
    (["build", *G8, "--output-padding", "0", "-o", "{out}"], "--output-padding"),
    (["check", *G8, "--output-padding", "0", "--no-torch"], "--output-padding"),
    (["build", "--in-shape", "8", "-o", "{out}"], "--kernel"),
    (["build", *G8, "--dtype", "float16", "-o", "{out}"], "--dtype"),
    (["shape", "--kernel", "3"], "--in-shape"),
    (["shape", *G8, "--no-such-option"], "--no-such-option"),
    (["shape", *G8, "--transposed"], "--transposed"),
    (["draw", *G8, "--weight", "{good}", "-o", "{dir}/d"], "--weight"),
    (["frobnicate", *G8], "frobnicate"),
]


def _argv(template, files, tmp_path):
    names = {k: str(v) for k, v in files.items()}
    names["out"] = str(tmp_path / "C.npz")
    return [a.format(**names) for a in template]


def _assert_one_line_error(code, out, err, option):
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("convmat: error: "), err
    assert option in lines[0], (option, err)
    assert "Traceback" not in err and "internal error" not in err, err


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100
    assert len({tuple(argv) for argv, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("template, option", CASES, ids=[" ".join(c[0])[:80] for c in CASES])
def test_bad_invocation_is_one_line_naming_the_option(capsys, files, tmp_path, monkeypatch, template, option):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(_argv(template, files, tmp_path))
    out, err = capsys.readouterr()
    _assert_one_line_error(code, out, err, option)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not os.path.exists("/proc/convmat_C.npz")


def test_a_failing_check_is_exit_1(capsys, monkeypatch):
    import convmat.checks

    monkeypatch.setattr(convmat.checks, "check_geometry", lambda *a, **k: [("nnz", 18, None, True),
                                                                         ("adjoint test", 1.0, 1e-12, False)])
    code = main(["check", *G8, "--no-torch"])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    assert out.splitlines()[-1].startswith("1 of 2 passed")


def test_an_unexpected_exception_is_still_one_line(capsys, monkeypatch):
    """The last line of defence: a bug is reported in one line (and the fuzz cases above never reach it)."""
    import convmat.cli.commands

    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(convmat.cli.commands, "cmd_shape", broken)
    code = main(["shape", *G8])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("convmat: error: internal error (KeyError: 'oops')")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(convmat.cli.commands, "cmd_shape", interrupted)
    assert main(["shape", *G8]) == 130
    assert capsys.readouterr().err == "convmat: interrupted\n"


# --------------------------------------------------------------------------- #
# the real program
# --------------------------------------------------------------------------- #
PROGRAM_CASES = [
    (["build", "--in-shape", "8", "--weight", "{empty}", "-o", "{out}"], "--weight"),
    (["build", "--in-shape", "8", "--weight", "{npz}", "-o", "{out}"], "--weight"),
    (["build", *G8, "--max-bytes", "1e400", "-o", "{out}"], "--max-bytes"),
    (["draw", *G8, "-o", "{a_file}"], "--out"),
    (["check", *G8, "--output-padding", "0"], "--output-padding"),
]


@pytest.mark.parametrize("entry", ["python -m convmat", "convmat script"])
def test_the_installed_program_gives_one_line_too(files, tmp_path, entry):
    if entry == "python -m convmat":
        prefix = [sys.executable, "-m", "convmat"]
    else:
        script = shutil.which("convmat", path=os.path.dirname(sys.executable))
        if script is None:
            pytest.skip("the convmat console script is not installed next to this Python")
        prefix = [script]
    for template, option in PROGRAM_CASES[:3] if entry == "python -m convmat" else PROGRAM_CASES[3:]:
        done = subprocess.run(prefix + _argv(template, files, tmp_path), capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        _assert_one_line_error(done.returncode, done.stdout, done.stderr, option)
    if entry == "python -m convmat":
        return
    bare = subprocess.run(prefix, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and len(bare.stderr.splitlines()) <= 6 and "Traceback" not in bare.stderr


def test_a_closed_pipe_is_silent():
    """``convmat shape ... | head -1``: the reader goes away; no traceback, no error line, status 141."""
    child = subprocess.Popen([sys.executable, "-m", "convmat", "shape", *G8], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has imported anything, so its first write finds no reader
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and err == ""
