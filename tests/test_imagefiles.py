"""Image files: round trips through PNG within 0.5/255, explicit clipping and normalisation."""

import subprocess
import sys

import numpy as np
import pytest

from convmat.imagefiles import read_image, read_images, write_image

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

HALF_LEVEL = 0.5 / 255 + 1e-12


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("batched", [False, True])
def test_round_trip_within_half_a_level(tmp_path, channels, batched):
    x = np.random.default_rng(channels).uniform(0, 1, (channels, 13, 17))
    path = tmp_path / "x.png"
    write_image(path, x[None] if batched else x)
    y = read_image(path, mode={1: None, 3: None, 4: "RGBA"}[channels])
    assert y.shape == (1, channels, 13, 17) and y.dtype == np.float64
    assert np.abs(y[0] - x).max() <= HALF_LEVEL
    assert y.min() >= 0 and y.max() <= 1


def test_exact_levels_round_trip_exactly(tmp_path):
    x = (np.arange(256.0) / 255).reshape(1, 16, 16)
    write_image(tmp_path / "levels.png", x)
    np.testing.assert_array_equal(read_image(tmp_path / "levels.png")[0], x)
    raw = read_image(tmp_path / "levels.png", scale=False)
    np.testing.assert_array_equal(raw[0, 0].ravel(), np.arange(256.0))


def test_dtype_float32(tmp_path):
    write_image(tmp_path / "a.png", np.full((3, 4, 4), 0.5))
    y = read_image(tmp_path / "a.png", dtype=np.float32)
    assert y.dtype == np.float32 and abs(float(y[0, 0, 0, 0]) - 128 / 255) < 1e-7


def test_modes_convert(tmp_path):
    rgb = np.zeros((3, 2, 2))
    rgb[0] = 1.0  # pure red
    write_image(tmp_path / "red.png", rgb)
    gray = read_image(tmp_path / "red.png", mode="L")
    assert gray.shape == (1, 1, 2, 2) and abs(gray.max() - 76 / 255) < 1e-12  # ITU-R 601-2 luma of red
    write_image(tmp_path / "g.png", np.full((1, 2, 2), 0.2))
    assert read_image(tmp_path / "g.png", mode="RGB").shape == (1, 3, 2, 2)
    # an RGBA file reads as RGB by default (alpha dropped), as RGBA on request
    write_image(tmp_path / "rgba.png", np.full((4, 2, 2), 0.6))
    assert read_image(tmp_path / "rgba.png").shape == (1, 3, 2, 2)
    assert read_image(tmp_path / "rgba.png", mode="RGBA").shape == (1, 4, 2, 2)


def test_palette_and_16_bit_files(tmp_path):
    palette = Image.new("P", (3, 2))
    palette.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    y = read_image(tmp_path / "p.png")
    assert y.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(y[0, :, 0, 1], [1.0, 128 / 255, 0.0])

    deep = np.array([[0, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    y16 = read_image(tmp_path / "deep.png")
    assert y16.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(y16[0, 0, 0], deep[0] / 65535, rtol=1e-12)


def test_clip_normalize_and_scale(tmp_path):
    x = np.array([[[-0.5, 0.25, 1.5]]])
    write_image(tmp_path / "c.png", x)  # clip=True by default
    np.testing.assert_array_equal(read_image(tmp_path / "c.png", scale=False)[0, 0, 0], [0, 64, 255])
    with pytest.raises(ValueError, match=r"x has values in \[-0.5, 1.5\], outside \[0, 1\]; pass clip=True"):
        write_image(tmp_path / "nc.png", x, clip=False)
    assert not (tmp_path / "nc.png").exists()
    write_image(tmp_path / "n.png", x, normalize=True)
    np.testing.assert_array_equal(read_image(tmp_path / "n.png", scale=False)[0, 0, 0], [0, 96, 255])
    write_image(tmp_path / "const.png", np.full((1, 2, 2), 7.0), normalize=True)
    assert read_image(tmp_path / "const.png").max() == 0.0
    write_image(tmp_path / "raw.png", np.array([[[0.0, 100.4, 300.0]]]), scale=False)
    np.testing.assert_array_equal(read_image(tmp_path / "raw.png", scale=False)[0, 0, 0], [0, 100, 255])


def test_read_images_stacks_same_sized_files(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (3, 3, 5, 6))
    paths = []
    for i, x in enumerate(xs):
        paths.append(tmp_path / f"{i}.png")
        write_image(paths[-1], x)
    batch = read_images(paths)
    assert batch.shape == (3, 3, 5, 6)
    assert np.abs(batch - xs).max() <= HALF_LEVEL
    write_image(tmp_path / "small.png", xs[0, :, :4])
    with pytest.raises(ValueError, match=r"all images must have the same \(C, H, W\).*\(3, 5, 6\).*small.png.*\(3, 4, 6\)"):
        read_images(paths + [tmp_path / "small.png"])
    write_image(tmp_path / "gray.png", xs[0, :1])
    with pytest.raises(ValueError, match=r"has \(1, 5, 6\)"):
        read_images([paths[0], tmp_path / "gray.png"])
    assert read_images([paths[0], tmp_path / "gray.png"], mode="L").shape == (2, 1, 5, 6)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"x must have shape \(C, H, W\) or \(1, C, H, W\) with C in \(1, 3, 4\), got \(2, 4, 4\)"):
        write_image(tmp_path / "a.png", np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"got \(2, 1, 4, 4\); write one image per file"):
        write_image(tmp_path / "a.png", np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"got \(4, 4\)"):
        write_image(tmp_path / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="x must be finite"):
        write_image(tmp_path / "a.png", np.full((1, 2, 2), np.nan))
    with pytest.raises(TypeError, match="x must be an array of real numbers, got dtype complex128"):
        write_image(tmp_path / "a.png", np.zeros((1, 2, 2), complex))
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        write_image(3, np.zeros((1, 2, 2)))
    write_image(tmp_path / "ok.png", np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"mode must be None or one of \('L', 'RGB', 'RGBA'\), got 'CMYK'"):
        read_image(tmp_path / "ok.png", mode="CMYK")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        read_image(tmp_path / "ok.png", dtype=np.uint8)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="paths must be a sequence of paths"):
        read_images(str(tmp_path / "ok.png"))
    with pytest.raises(ValueError, match="paths must name at least one image file"):
        read_images([])


def test_pillow_is_imported_lazily():
    code = "import sys, convmat.imagefiles, convmat.operator, convmat.checks, convmat.spectrum; print('PIL' in sys.modules, 'torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
