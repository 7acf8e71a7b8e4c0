"""Image files: round trips through PNG within 0.5/255, explicit clipping and normalisation."""

import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from convmat.imagefiles import ImageTooLargeError, read_image, read_images, write_image

HALF_LEVEL = 0.5 / 255 + 1e-12


@pytest.fixture
def Image():
    """Pillow's Image module; a test that reads or writes files is skipped without Pillow."""
    return pytest.importorskip("PIL.Image")


def write_png(path, samples, *, bit_depth=16, size=None, data=None):
    """A PNG written byte by byte (Pillow cannot write 16-bit colour): ``samples`` (H, W, C), C in 1..4.

    ``size`` overrides the (width, height) in the header and ``data`` the compressed pixels, to make a
    file whose header promises more than it holds.
    """
    h, w, c = samples.shape
    width, height = size or (w, h)
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + samples[i].astype(dtype).tobytes() for i in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    body = zlib.compress(rows) if data is None else data
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("batched", [False, True])
def test_round_trip_within_half_a_level(Image, tmp_path, channels, batched):
    x = np.random.default_rng(channels).uniform(0, 1, (channels, 13, 17))
    path = tmp_path / "x.png"
    write_image(path, x[None] if batched else x)
    y = read_image(path, mode={1: None, 3: None, 4: "RGBA"}[channels])
    assert y.shape == (1, channels, 13, 17) and y.dtype == np.float64
    assert np.abs(y[0] - x).max() <= HALF_LEVEL
    assert y.min() >= 0 and y.max() <= 1


def test_exact_levels_round_trip_exactly(Image, tmp_path):
    x = (np.arange(256.0) / 255).reshape(1, 16, 16)
    write_image(tmp_path / "levels.png", x)
    np.testing.assert_array_equal(read_image(tmp_path / "levels.png")[0], x)
    raw = read_image(tmp_path / "levels.png", scale=False)
    np.testing.assert_array_equal(raw[0, 0].ravel(), np.arange(256.0))


def test_dtype_float32(Image, tmp_path):
    write_image(tmp_path / "a.png", np.full((3, 4, 4), 0.5))
    y = read_image(tmp_path / "a.png", dtype=np.float32)
    assert y.dtype == np.float32 and abs(float(y[0, 0, 0, 0]) - 128 / 255) < 1e-7


def test_modes_convert(Image, tmp_path):
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


def test_palette_and_16_bit_files(Image, tmp_path):
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


def test_clip_normalize_and_scale(Image, tmp_path):
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


def test_read_images_stacks_same_sized_files(Image, tmp_path):
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


def test_bad_inputs(Image, tmp_path):
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
    with pytest.raises(TypeError, match="^dtype must be float32 or float64, got 'foo'$"):
        read_image(tmp_path / "ok.png", dtype="foo")
    with pytest.raises(TypeError, match="^dtype must be float32 or float64, got None$"):
        read_image(tmp_path / "ok.png", dtype=None)
    with pytest.raises(ValueError, match=r"^max_bytes must be >= 0 \(a number of bytes\), got -1$"):
        read_image(tmp_path / "ok.png", max_bytes=-1)
    with pytest.raises(TypeError, match=r"^max_bytes must be an integer, got 1.5"):
        read_image(tmp_path / "ok.png", max_bytes=1.5)
    with pytest.raises(TypeError) as info:
        read_image(tmp_path / "ok.png", dtype="foo")
    assert info.value.parameter == "dtype"  # the attribute the command line maps to an option
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


# --------------------------------------------------------------------------- #
# the decoded size is checked from the header, before decoding
# --------------------------------------------------------------------------- #
def test_a_huge_image_is_refused_from_its_header_before_decoding(Image, tmp_path):
    """A 9000 x 9000 RGB header with a few bytes of pixels: refused with the size, nothing decoded."""
    path = tmp_path / "bomb.png"
    write_png(path, np.zeros((1, 1, 3)), bit_depth=8, size=(9000, 9000), data=zlib.compress(b"\x00" * 64))
    need = 9000 * 9000 * (4 + 4 + 3 * (1 + 2 * 8))  # Pillow's RGB (4 B/px) twice, 3 samples, 2 float64 copies
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match=rf"9000 x 9000 RGB image; reading it as 3 channel\(s\) of "
                                                      rf"float64 would take {need:,} bytes, more than limit "
                                                      rf"max_bytes \(100,000,000 bytes\)"):
            read_image(path, max_bytes=10**8)
        assert tracemalloc.get_traced_memory()[1] < 10**6
    finally:
        tracemalloc.stop()
    with pytest.raises(ImageTooLargeError, match="more than limit max_bytes"):
        read_images([path], max_bytes=10**8)
    assert isinstance(ImageTooLargeError("x"), MemoryError)


@pytest.mark.parametrize("mode, channels, dtype", [("L", 1, np.float64), ("RGB", 3, np.float32), ("RGBA", 4, np.float64)])
def test_the_size_check_is_the_documented_formula(Image, tmp_path, mode, channels, dtype):
    """The refusal happens exactly above W H (b_file + b_conv + C (b_sample + 2 b_dtype))."""
    write_image(tmp_path / "a.png", np.full((3, 5, 7), 0.5))  # an RGB file
    need = 5 * 7 * (4 + {"L": 1}.get(mode, 4) + channels * (1 + 2 * np.dtype(dtype).itemsize))
    assert read_image(tmp_path / "a.png", mode=mode, dtype=dtype, max_bytes=need).shape == (1, channels, 5, 7)
    with pytest.raises(ImageTooLargeError, match=f"would take {need:,} bytes"):
        read_image(tmp_path / "a.png", mode=mode, dtype=dtype, max_bytes=need - 1)


# --------------------------------------------------------------------------- #
# 16-bit files
# --------------------------------------------------------------------------- #
def test_16_bit_gray_keeps_16_bits_in_every_mode(Image, tmp_path):
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4, 1) * 5461 + 7)  # up to 60078, not multiples of 257
    write_png(tmp_path / "g16.png", deep)
    want = deep[..., 0] / 65535
    np.testing.assert_allclose(read_image(tmp_path / "g16.png")[0, 0], want, rtol=1e-15)
    rgb = read_image(tmp_path / "g16.png", mode="RGB")
    assert rgb.shape == (1, 3, 3, 4)
    for c in range(3):
        np.testing.assert_allclose(rgb[0, c], want, rtol=1e-15)  # Pillow's convert('RGB') would clip to 255
    rgba = read_image(tmp_path / "g16.png", mode="RGBA", scale=False)
    np.testing.assert_array_equal(rgba[0, 0], deep[..., 0])
    np.testing.assert_array_equal(rgba[0, 3], np.full((3, 4), 65535.0))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_says_it_loses_precision(Image, tmp_path, channels):
    deep = np.random.default_rng(channels).integers(0, 65536, (3, 4, channels)).astype(np.uint16)
    write_png(tmp_path / "c16.png", deep)
    with pytest.warns(UserWarning, match=r"c16.png' has 16-bit colour samples, which Pillow decodes at 8 bits"):
        y = read_image(tmp_path / "c16.png", mode="RGBA" if channels == 4 else None)
    assert np.abs(y * 255 - np.rint(y * 255)).max() < 1e-9  # multiples of 1/255, as the warning says
    if channels >= 3:
        assert np.abs(y[0] - np.moveaxis(deep, -1, 0) / 65535).max() <= 1 / 255 + 1e-12


def test_8_bit_files_do_not_warn(Image, tmp_path, recwarn):
    write_image(tmp_path / "a.png", np.full((3, 2, 2), 0.5))
    read_image(tmp_path / "a.png")
    write_png(tmp_path / "g16.png", np.ones((2, 2, 1), np.uint16))
    read_image(tmp_path / "g16.png", mode="RGB")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
