"""The command line, run in-process through ``convmat.cli.main`` (plus one ``python -m convmat``)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from convmat import conv_matrix, conv_output_shape, conv_plan, conv_transpose_matrix
from convmat.cli import build_parser, main

GEOM = ["--in-shape", "12", "10", "--kernel", "3", "--stride", "2", "--padding", "1", "--in-channels", "3",
        "--out-channels", "4"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def field(out: str, label: str) -> str:
    """The text after ``label`` on the line that starts with it."""
    for line in out.splitlines():
        if line.strip().startswith(label):
            return line.strip()[len(label):].strip()
    raise AssertionError(f"no line starting with {label!r} in:\n{out}")


def leading_tuple(text: str):
    return ast.literal_eval(re.match(r"(\([^()]*\))", text).group(1))


# --------------------------------------------------------------------------- #
# shape
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "in_shape, kernel, options, kwargs",
    [
        ((32, 32), (3, 3), ["--stride", 2, "--padding", 1], dict(stride=2, padding=1)),
        ((10, 11), (4, 4), ["--stride", 3, "--padding", "same"], dict(stride=3, padding="same")),
        ((9, 7), (3, 2), ["--padding", "1:2", "0:0"], dict(padding=((1, 2), (0, 0)))),
        ((9,), (3,), ["--dilation", 2, "--padding", "full"], dict(dilation=2, padding="full")),
        ((5, 6, 7), (2, 2, 2), ["--stride", 1, 2, 1, "--padding", 1, 0, 1], dict(stride=(1, 2, 1), padding=(1, 0, 1))),
    ],
)
def test_shape_prints_the_forward_shape_and_the_plans_sizes(capsys, in_shape, kernel, options, kwargs):
    kernel_option = kernel[:1] if len(set(kernel)) == 1 else kernel
    code, out, err = run(capsys, "shape", "--in-shape", *in_shape, "--kernel", *kernel_option, *options,
                         "--in-channels", 2, "--out-channels", 6, "--groups", 2)
    assert code == 0, err
    spatial = conv_output_shape(in_shape, kernel, **kwargs)
    assert leading_tuple(field(out, "forward output")) == (6, *spatial)
    plan = conv_plan((6, 1, *kernel), in_shape, groups=2, **kwargs)
    assert int(field(out, "nnz").split()[0].replace(",", "")) == plan.nnz
    for dt in ("float32", "float64"):
        exact = re.search(r"\(([\d,]+) B\)", field(out, f"bytes ({dt})")).group(1)
        assert int(exact.replace(",", "")) == plan.nbytes(dt)
    assert field(out, "index dtype").split()[0] == "int32"
    # the default output_padding restores the input
    assert leading_tuple(field(out, "transposed output")) == (2, *in_shape)


def test_shape_reports_the_restoring_output_padding(capsys):
    code, out, _ = run(capsys, "shape", "--in-shape", 32, 31, "--kernel", 3, "--stride", 2, "--padding", 1,
                       "--output-padding", 0)
    assert code == 0
    assert leading_tuple(field(out, "transposed output")) == (1, 31, 31)
    assert leading_tuple(field(out, "output_padding restoring the input")) == (1, 0)
    assert leading_tuple(field(out, "zeros inserted between samples (s-1)")) == (1, 1)


@pytest.mark.parametrize(
    "in_shape, k, s, d, padding_options, padding, groups",
    [
        ((11, 10), 3, 2, 1, ["1"], 1, 1),
        ((9, 12), 4, 3, 1, ["2:1", "0:2"], ((2, 1), (0, 2)), 2),
        ((13, 8), 3, 2, 2, ["same"], "same", 1),
    ],
)
def test_shape_recipe_is_the_transposed_convolution(capsys, in_shape, k, s, d, padding_options, padding, groups):
    """Zero insertion, the printed padding, the flipped swapped kernel, stride 1 == the transposed conv."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    code, out, _ = run(capsys, "shape", "--in-shape", *in_shape, "--kernel", k, "--stride", s, "--dilation", d,
                       "--padding", *padding_options, "--in-channels", 2, "--out-channels", 4, "--groups", groups)
    assert code == 0
    assert leading_tuple(field(out, "zeros inserted between samples (s-1)")) == (s - 1, s - 1)
    pads = ast.literal_eval(field(out, "padding (e-1-lo, e-1-hi+a) per axis").split("  ")[0])
    fwd_out = leading_tuple(field(out, "forward output"))
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.standard_normal((4, 2 // groups, k, k)))
    y = torch.from_numpy(rng.standard_normal((1, *fwd_out)))
    # the recipe, step by step
    z = torch.zeros((1, 4, *[(n - 1) * s + 1 for n in fwd_out[1:]]), dtype=torch.float64)
    z[:, :, ::s, ::s] = y
    z = F.pad(z, [v for lo_hi in reversed(pads) for v in lo_hi])  # last axis first; negative crops
    g = groups
    wf = w.flip(-1, -2).reshape(g, 4 // g, 2 // g, k, k).transpose(1, 2).reshape(2, 4 // g, k, k)
    got = F.conv2d(z, wf, dilation=d, groups=g)
    assert tuple(got.shape) == (1, 2, *in_shape)
    # oracle 1: C.T of the forward convolution (the transposed conv restoring the input)
    C = conv_matrix(w.numpy(), in_shape, stride=s, dilation=d, groups=g, padding=padding)
    np.testing.assert_allclose(got.numpy().ravel(), C.T @ y.numpy().ravel(), atol=1e-12)
    # oracle 2: PyTorch's layer, where its symmetric padding can say it
    if padding == 1:
        a = leading_tuple(field(out, "output_padding used"))
        want = F.conv_transpose2d(y, w, stride=s, padding=1, dilation=d, groups=g, output_padding=a)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-12)


def test_help_documents_asymmetric_padding(capsys):
    code, out, _ = run(capsys, "shape", "--help")
    assert code == 0
    assert "1:2 0:0" in out and "lo:hi" in out and "high side" in out.lower().replace("HIGH", "high")


# --------------------------------------------------------------------------- #
# build
# --------------------------------------------------------------------------- #
def seeded_weight(seed, shape, dtype=np.float32):
    """The weight `convmat build --seed` documents: default_rng(seed).standard_normal, cast to dtype."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_build_saves_the_conv_matrix_of_the_seeded_weight(capsys, tmp_path):
    path = tmp_path / "C.npz"
    code, out, err = run(capsys, "build", *GEOM, "--seed", 3, "-o", path)
    assert code == 0, err
    C = sp.load_npz(path)
    want = conv_matrix(seeded_weight(3, (4, 3, 3, 3)), (12, 10), stride=2, padding=1)
    assert C.shape == want.shape == (4 * 6 * 5, 3 * 12 * 10)
    assert C.dtype == np.float32 and C.indices.dtype == np.int32
    assert (C != want).nnz == 0 and C.nnz == want.nnz
    assert int(field(out, "nnz").replace(",", "")) == want.nnz
    assert field(out, "saved") == str(path)


def test_build_transposed_is_conv_transpose_matrix_and_C_T(capsys, tmp_path):
    code, _, err = run(capsys, "build", *GEOM, "--seed", 5, "--dtype", "float64", "--transposed",
                       "-o", tmp_path / "T.npz")
    assert code == 0, err
    T = sp.load_npz(tmp_path / "T.npz")
    w = seeded_weight(5, (4, 3, 3, 3), np.float64)
    want = conv_transpose_matrix(w, (6, 5), stride=2, padding=1, output_size=(12, 10))
    assert T.dtype == np.float64
    assert (T != want).nnz == 0
    assert (T != conv_matrix(w, (12, 10), stride=2, padding=1).T).nnz == 0


def test_build_reads_the_weight_file(capsys, tmp_path):
    w = np.arange(2 * 3 * 2 * 3, dtype=np.float64).reshape(2, 3, 2, 3) - 10
    np.save(tmp_path / "W.npy", w)
    code, _, err = run(capsys, "build", "--in-shape", 6, 7, "--padding", "same", "--weight", tmp_path / "W.npy",
                       "-o", tmp_path / "C.npz")
    assert code == 0, err
    C = sp.load_npz(tmp_path / "C.npz")
    assert C.dtype == np.float64
    assert (C != conv_matrix(w, (6, 7), padding="same")).nnz == 0
    code, _, err = run(capsys, "build", "--in-shape", 6, 7, "--kernel", 3, "--weight", tmp_path / "W.npy",
                       "-o", tmp_path / "C2.npz")
    assert code == 2
    assert err.startswith("convmat: error: argument --weight:") and "--kernel" in err
    assert not (tmp_path / "C2.npz").exists()


def test_build_refuses_a_matrix_over_the_limit(capsys, tmp_path):
    path = tmp_path / "C.npz"
    code, out, err = run(capsys, "build", *GEOM, "--max-bytes", "1kB", "-o", path)
    assert code == 2
    assert err.startswith("convmat: error: argument --max-bytes: the matrix of shape (120, 360)")
    assert "Traceback" not in err and err.count("\n") == 1
    assert not path.exists() and out == ""
    assert run(capsys, "build", *GEOM, "--max-bytes", "10MB", "-o", path)[0] == 0


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "argv, option",
    [
        (["shape", "--in-shape", 8, 8, "--kernel", 3, "--stride", 0], "--stride"),
        (["shape", "--in-shape", 8, 8, "--kernel", 3, 3, 3], "--kernel"),
        (["shape", "--in-shape", 4, "--kernel", 7], "--kernel"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--padding", "same", 1], "--padding"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--padding", "1:2:3"], "--padding"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--padding", "-1"], "--padding"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--stride", 2, "--output-padding", 2], "--output-padding"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--padding", 8, "--padding-mode", "reflect"], "--padding"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--padding-mode", "mirror"], "--padding-mode"),
        (["shape", "--in-shape", 8, "--kernel", 3, "--in-channels", 3, "--groups", 2], "--in-channels"),
        (["shape", "--in-shape", 0, "--kernel", 1], "--in-shape"),
        (["shape", "--kernel", 3], "--in-shape"),
        (["build", "--in-shape", 8, "-o", "x.npz"], "--kernel"),
        (["build", "--in-shape", 8, "--kernel", 3, "--dtype", "int8", "-o", "x.npz"], "--dtype"),
        (["build", "--in-shape", 8, "--kernel", 3, "--max-bytes", "lots", "-o", "x.npz"], "--max-bytes"),
        (["build", "--in-shape", 8, "--kernel", 3, "--weight", "missing.npy", "-o", "x.npz"], "--weight"),
        (["build", "--in-shape", 8, "--kernel", 3, "--padding", 1, "--padding-mode", "reflect", "--transposed",
          "-o", "x.npz"], "--transposed"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(capsys, tmp_path, monkeypatch, argv, option):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("convmat: error: ") and err.count("\n") == 1, err
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_no_command_prints_a_short_usage_and_exits_2(capsys):
    code, out, err = run(capsys)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert 2 <= len(lines) <= 6 and lines[-1] == "convmat: error: a command is required"
    assert [line.split()[0] for line in lines[1:-1]] == ["shape", "build", "check", "draw"]


def test_copied_constants_are_the_librarys():
    from convmat.weights import VALUE_DTYPES
    from convmat.cli.parser import DTYPES, PADDING_KEYWORDS, build_parser
    from convmat.geometry import PADDING_MODES, PADDING_STRINGS

    assert DTYPES == tuple(str(d) for d in VALUE_DTYPES)
    assert PADDING_KEYWORDS == tuple(PADDING_STRINGS)
    choices = {a.dest: a.choices for a in build_parser()._subparsers._group_actions[0].choices["build"]._actions}
    assert tuple(choices["padding_mode"]) == PADDING_MODES and tuple(choices["dtype"]) == DTYPES


def test_errors_map_to_options_through_the_parameter_attribute():
    from convmat.cli import OPTION_OF, option_of
    from convmat.errors import ParameterError, ParameterTypeError

    # the attribute wins over a message that names another parameter
    assert option_of(ParameterError("dilation", "stride * dilation too large")) == "--dilation"
    assert option_of(ParameterTypeError("groups", "x")) == "--groups"
    assert option_of(ValueError("padding must be >= 0")) == "--padding"  # fallback: the message
    assert option_of(ValueError("nothing known")) is None
    with_weight = type("Args", (), {"weight": "W.npy"})()
    assert option_of(ParameterError("kernel_size", "k"), with_weight) == "--weight"
    parser_options = {s for a in build_parser()._subparsers._group_actions[0].choices["build"]._actions
                      for s in a.option_strings}
    assert {o for v in OPTION_OF.values() for o in v.split("/")} <= parser_options | {"--max-dense"}


# --------------------------------------------------------------------------- #
# check
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("transposed", [False, True])
def test_check_prints_one_row_per_check_and_exits_0(capsys, transposed):
    from convmat.checks import check_geometry

    code, out, err = run(capsys, "check", *GEOM, "--seed", 1, *(["--transposed"] if transposed else []))
    assert code == 0, out + err
    table = out.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:4] == ["check", "value", "tolerance", "result"])
    body = table[header + 1 : -1]
    assert body and all(line.split()[-1] == "pass" for line in body)
    in_shape = (6, 5) if transposed else (12, 10)
    extra = dict(transposed=True, output_padding=(1, 0)) if transposed else {}
    rows = check_geometry((4, 3, 3, 3), in_shape, stride=(2, 2), padding=((1, 1), (1, 1)), dilation=(1, 1),
                          groups=1, padding_mode="zeros", seed=1, **extra)
    assert [line.split("  ")[0] for line in body] == [str(r[0]) for r in rows]
    assert table[-1].startswith(f"{len(rows)} of {len(rows)} passed")


# --------------------------------------------------------------------------- #
# as a program
# --------------------------------------------------------------------------- #
def test_python_m_convmat_shape_and_no_heavy_imports():
    code = (
        "import sys, runpy; sys.argv = ['convmat'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('convmat', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "print('heavy:', sorted(m for m in ('torch', 'matplotlib', 'PIL') if m in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    argv = ["shape", "--in-shape", "224", "224", "--kernel", "7", "--stride", "2", "--padding", "3",
            "--in-channels", "3", "--out-channels", "64"]
    plain = subprocess.run([sys.executable, "-m", "convmat", *argv], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert leading_tuple(field(plain.stdout, "forward output")) == (64, 112, 112)
    probe = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().endswith("heavy: []")


# --------------------------------------------------------------------------- #
# draw
# --------------------------------------------------------------------------- #
def test_draw_writes_pictures_derived_from_the_matrix(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image, ImageSequence

    status = main(["draw", "--in-shape", "5", "5", "--kernel", "3", "--stride", "2", "--padding", "1",
                   "--max-frames", "4", "-o", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    for name in ("matrix.png", "matrix_T.png", "conv_frame.png", "conv.gif", "recipe.png", "conv_transpose.gif",
                 "output_padding.png", "recipe_matrices.png"):
        assert (tmp_path / name).stat().st_size > 0, name
        assert f"wrote {tmp_path / name}" in out
    with Image.open(tmp_path / "conv.gif") as gif:  # 3x3 outputs, capped at 4 frames
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == 4
    assert "first 4 of 9 output pixels" in out


def test_draw_says_what_it_cannot_draw(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["draw", "--in-shape", "4", "4", "4", "--kernel", "3", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "matrix.png").exists() and not (tmp_path / "conv.gif").exists()
    assert "frames are drawn for 1-D and 2-D, this is 3-D" in out
    assert main(["draw", "--in-shape", "6", "--kernel", "3", "--padding", "1", "--padding-mode", "reflect",
                 "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "r" / "conv.gif").exists() and not (tmp_path / "r" / "recipe.png").exists()
    assert "zero-insertion recipe are the transpose of zero padding only" in out


# --------------------------------------------------------------------------- #
# build -o writes exactly the path given
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name, written", [("C.npz", "C.npz"), ("C", "C.npz"), ("C.mat", "C.mat.npz"),
                                           ("sub/C.npz", "sub/C.npz")])
def test_build_output_is_the_path_given_plus_npz_when_missing(capsys, tmp_path, name, written):
    (tmp_path / "sub").mkdir()
    code, out, err = run(capsys, "build", "--in-shape", 6, "--kernel", 3, "-o", tmp_path / name)
    assert code == 0, err
    assert field(out, "saved") == str(tmp_path / written)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [written.split("/")[-1]]
    assert sp.load_npz(tmp_path / written).shape == (4, 6)


@pytest.mark.parametrize("make_target", [lambda d: d, lambda d: str(d) + "/", lambda d: d / "missing" / "C.npz"])
def test_build_output_directory_or_missing_parent_is_exit_2_before_building(capsys, tmp_path, make_target):
    code, out, err = run(capsys, "build", "--in-shape", 6, "--kernel", 3, "-o", make_target(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("convmat: error: argument --output: ") and err.count("\n") == 1
    assert list(tmp_path.rglob("*.npz")) == []


def test_output_padding_without_transposed_is_an_error_in_build_and_check(capsys, tmp_path):
    for command in ("check", "build"):
        code, _, err = run(capsys, command, "--in-shape", 8, "--kernel", 3, "--stride", 2, "--output-padding", 1,
                           "-o" if command == "build" else "--no-torch", *([tmp_path / "C"] if command == "build" else []))
        assert code == 2
        assert err.startswith("convmat: error: argument --output-padding: ") and "--transposed" in err
    assert not (tmp_path / "C.npz").exists()
    # with --transposed it is honoured: a = 0 gives 15 samples instead of 16
    code, out, err = run(capsys, "check", "--in-shape", 16, "--kernel", 3, "--stride", 2, "--padding", 1,
                         "--output-padding", 0, "--transposed", "--no-torch")
    assert code == 0, err
    assert out.splitlines()[0].startswith("conv_transpose1d: (1, 8) -> (1, 15)")


def test_check_size_limit_names_checks_own_option(capsys):
    code, out, err = run(capsys, "check", *GEOM, "--max-bytes", "10kB", "--no-torch")
    assert code == 2 and out == ""
    assert err.startswith("convmat: error: argument --max-bytes: checking the matrix of shape (120, 360)")
    assert "convmat build" not in err and err.count("\n") == 1


# --------------------------------------------------------------------------- #
# draw --max-dense
# --------------------------------------------------------------------------- #
def test_draw_states_its_limit_in_help(capsys):
    code, out, _ = run(capsys, "draw", "--help")
    assert code == 0 and "--max-dense" in out and "default 400" in " ".join(out.split())


def test_draw_refuses_frames_above_max_dense_before_building_them(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from convmat import viz

    def forbidden(*args, **kwargs):
        raise AssertionError("frames computed above --max-dense")

    for name in ("conv_arithmetic_frames", "transposed_two_ways", "conv_transpose_frames", "output_padding_choices",
                 "recipe_matrices"):
        monkeypatch.setattr(viz, name, forbidden)
    # 256 x 256 took more than 8 GB before; the grid is 258 x 258 cells with padding 1
    code, out, err = run(capsys, "draw", "--in-shape", 256, 256, "--kernel", 3, "--padding", 1, "-o", tmp_path)
    assert code == 0, err
    assert ("not drawn: conv_frame.png, conv.gif, recipe.png, conv_transpose.gif, output_padding.png, "
            "recipe_matrices.png: the grid has 66,564 cells, more than --max-dense 400") in out
    assert (tmp_path / "matrix.png").exists() and not (tmp_path / "conv.gif").exists()
    # the recipe's grid counts too: n + e - 1 = 10 + 21 - 1 per axis with dilation 10
    code, out, _ = run(capsys, "draw", "--in-shape", 10, 10, "--kernel", 3, "--dilation", 10, "--padding", "same",
                       "--max-dense", 500, "-o", tmp_path / "d")
    assert code == 0 and "the grid has 900 cells, more than --max-dense 500" in out


def test_draw_notes_outputs_nothing_writes_and_refuses_big_recipe_matrices(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from convmat import viz

    def forbidden(*args, **kwargs):
        raise AssertionError("recipe_matrices drawn above --max-dense")

    monkeypatch.setattr(viz, "recipe_matrices", forbidden)
    # 8 channels: the recipe's matrices have 8 * 12 * 12 = 1,152 columns, the grid 10 x 10 cells
    code, out, err = run(capsys, "draw", "--in-shape", 8, 8, "--kernel", 3, "--stride", 2, "--dilation", 2,
                         "--padding", 1, "--in-channels", 8, "--out-channels", 8, "--max-frames", 1, "--max-dense", 150,
                         "-o", tmp_path)
    assert code == 0, err
    assert "not drawn: recipe_matrices.png: the recipe's matrices have 1,152 rows or columns, more than --max-dense 150" in out
    assert "note: transposed convolution: " in out and "share the factor 2" in out
    assert (tmp_path / "conv_transpose.gif").exists() and not (tmp_path / "recipe_matrices.png").exists()


@pytest.mark.parametrize("in_shape, k, s, d, padding, c, groups, a", [
    ((7,), 1, 2, 1, 1, 2, 1, None), ((7,), 3, 3, 2, 2, 4, 2, None), ((6, 5), 2, 2, 1, "same", 2, 1, None),
    ((6, 5), 3, 1, 2, 0, 2, 2, None), ((9,), 3, 2, 1, 0, 1, 1, (1,)), ((5, 7), 1, 3, 1, 1, 4, 4, (2, 2)),
])
def test_recipe_matrix_sides_is_the_largest_side_of_the_factors(in_shape, k, s, d, padding, c, groups, a):
    """The size draw checks before building anything equals the factors' largest side, cropping included."""
    from convmat import conv_transpose_plan, recipe_factors
    from convmat.cli.draw import recipe_matrix_sides

    weight_shape = (c, c // groups, *(k,) * len(in_shape))
    g = conv_plan(weight_shape, in_shape, stride=s, dilation=d, padding=padding, groups=groups).geometry
    kw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation, groups=groups,
              **({"output_size": in_shape} if a is None else {"output_padding": a}))
    trans = conv_transpose_plan(weight_shape, g.out_shape, **kw)
    factors = recipe_factors(np.ones(weight_shape), g.out_shape, **kw)
    assert recipe_matrix_sides(trans) == max(*trans.shape, *(n for f in factors for n in f.shape))


def test_shape_of_a_huge_geometry_builds_nothing(capsys):
    """10**9 x 10**9 samples: the sizes come from the closed forms, in the largest unit that fits."""
    code, out, err = run(capsys, "shape", "--in-shape", 10**9, 10**9, "--kernel", 3, "--padding", 1)
    assert code == 0, err
    plan = conv_plan((1, 1, 3, 3), (10**9, 10**9), padding=1)
    assert int(field(out, "nnz").split()[0].replace(",", "")) == plan.nnz
    assert re.match(r"\d+\.\d EB \(", field(out, "bytes (float64)"))
