"""Reading and writing image files as ``(N, C, H, W)`` arrays in ``[0, 1]``.

Pillow is imported inside the functions, never at import time.  Reading
scales 8-bit samples by 1/255 (16-bit by 1/65535); writing clips to
``[0, 1]`` (or maps min..max onto it with ``normalize=True``) and rounds to
the nearest of the 256 levels, so a round trip is off by at most 0.5/255.
Reading checks the decoded size, from the file's header, against a memory
limit before decoding anything.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import ParameterError, ParameterTypeError

__all__ = ["read_image", "read_images", "write_image", "ImageTooLargeError"]

#: Modes read_image accepts, and the channels each gives.
MODES = {"L": 1, "RGB": 3, "RGBA": 4}

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Pillow modes whose samples are read at their full depth (no 8-bit conversion), and that full scale.
_DEEP_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": None, "F": None}
_GRAY = ("1", "L", "LA", *_DEEP_GRAY)
#: Bytes per pixel of Pillow's own storage (multi-band modes use 4).
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, **{m: 2 for m in _DEEP_GRAY if m.startswith("I;16")}, "I": 4, "F": 4}


class ImageTooLargeError(MemoryError):
    """An image file would decode to more than the memory limit; raised before decoding."""


def _pil_pixel_bytes(mode: str) -> int:
    return _PIL_PIXEL_BYTES.get(mode, 4)


def _sixteen_bit_colour(img) -> bool:
    """Whether Pillow will decode this file's 16-bit colour samples at 8 bits (it has no 16-bit colour mode)."""
    if img.mode in _DEEP_GRAY:
        return False
    for tile in getattr(img, "tile", None) or ():
        rawmode = tile.args if isinstance(tile.args, str) else next(iter(tile.args or ()), None)
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _memory_limit(max_bytes):
    """The limit read_image applies, and its name: ``max_bytes``, else the host's (convmat.memory)."""
    from .backends import get_backend
    from .memory import memory_limit

    return memory_limit(max_bytes, get_backend("scipy"))


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a test dependency
        raise ImportError("reading and writing image files needs Pillow: pip install pillow") from exc
    return Image


def read_image(path, *, mode=None, dtype=np.float64, scale=True, max_bytes=None) -> np.ndarray:
    """Read one image file as a batch of one, ``(1, C, H, W)``.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {None, 'L', 'RGB', 'RGBA'}
        Convert to grayscale (C=1), RGB (C=3) or RGBA (C=4).  None keeps
        grayscale images grayscale (``'1'``, ``'L'``, ``'I'``, ``'I;16'``,
        ``'F'``, and ``'LA'`` without its alpha) and converts everything else to
        RGB (dropping alpha; palette images are expanded).
    dtype : {float32, float64}
    scale : bool
        True: divide 8-bit samples by 255 and 16-bit ones by 65535, so values
        lie in ``[0, 1]`` (32-bit integer and float images are not rescaled).
        False: the raw sample values.
    max_bytes : int, optional
        Refuse (:class:`ImageTooLargeError`, before decoding) a file whose
        decoding would take more than this; default: the host's limit (the
        smallest of the available memory, the cgroup limit and ``RLIMIT_AS``).

    Returns
    -------
    ndarray, shape (1, C, H, W)

    Warns
    -----
    UserWarning
        For a file with 16-bit colour samples (RGB, RGBA or gray + alpha):
        Pillow decodes those at 8 bits per sample, so the values are multiples
        of 1/255.  16-bit grayscale keeps its 16 bits, also with
        ``mode='RGB'`` or ``'RGBA'`` (the samples are repeated).

    Notes
    -----
    The decoded size is computed from the header (width ``W``, height
    ``H``, mode) before anything is decoded:
    ``W H (b_file + b_conv + C b_sample + 2 C b_dtype)``, with ``b_file``
    and ``b_conv`` the bytes per pixel of Pillow's decoded and converted
    images, ``b_sample`` the bytes of one decoded sample and ``b_dtype`` the
    itemsize of ``dtype`` (the conversion to it and the channel-first copy).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> x = np.linspace(0, 1, 12).reshape(1, 3, 4)
    >>> path = os.path.join(tempfile.mkdtemp(), "ramp.png")
    >>> write_image(path, x)
    >>> y = read_image(path)
    >>> y.shape, bool(np.abs(y[0] - x).max() <= 0.5 / 255)
    ((1, 1, 3, 4), True)
    """
    if mode is not None and mode not in MODES:
        raise ParameterError("mode", f"mode must be None or one of {tuple(MODES)}, got {mode!r}")
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:  # not a dtype at all ('foo')
        dt = None
    if dt is None or dt not in _FLOAT_DTYPES:
        raise ParameterTypeError("dtype", f"dtype must be float32 or float64, got {dtype!r}")
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ParameterTypeError("path", f"path must be a str or os.PathLike, got {type(path).__name__}")
    limit, what = _memory_limit(max_bytes)
    Image = _pil()
    with Image.open(path) as img:  # reads the header only
        src = img.mode
        if mode is None:
            mode = "L" if src in _GRAY else "RGB"
        deep = src in _DEEP_GRAY
        channels = MODES[mode]
        width, height = img.size
        sample = _pil_pixel_bytes(src) if deep else 1  # one gray sample is one pixel
        per_pixel = _pil_pixel_bytes(src) + (0 if deep else _pil_pixel_bytes(mode)) + channels * (sample + 2 * dt.itemsize)
        need = width * height * per_pixel
        if limit is not None and need > limit:
            raise ImageTooLargeError(
                f"{os.fspath(path)!r} is a {width} x {height} {src} image; reading it as {channels} channel(s) of "
                f"{dt} would take {need:,} bytes, more than {what} ({limit:,} bytes); pass a larger max_bytes "
                f"or read a smaller image"
            )
        if _sixteen_bit_colour(img):
            warnings.warn(
                f"{os.fspath(path)!r} has 16-bit colour samples, which Pillow decodes at 8 bits per sample: the "
                f"values read are multiples of 1/255 (16-bit grayscale keeps its precision)",
                UserWarning, stacklevel=2,
            )
        img.load()
        if deep:  # keep the full depth; repeat the gray samples for RGB, with an opaque alpha for RGBA
            arr = np.asarray(img)
            full = _DEEP_GRAY[src]
        else:
            arr = np.asarray(img.convert(mode))
            full = 255.0
    arr = arr.astype(dt)
    if scale and full is not None:
        arr /= dt.type(full)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    if deep and channels > 1:
        opaque = dt.type(1.0 if scale and full is not None else (full or 1.0))
        arr = np.concatenate([arr] * 3 + ([np.full_like(arr, opaque)] if channels == 4 else []))
    return np.ascontiguousarray(arr)[None]


def read_images(paths, *, mode=None, dtype=np.float64, scale=True, max_bytes=None) -> np.ndarray:
    """Read several image files of the same size into one batch ``(N, C, H, W)``.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
    mode, dtype, scale
        As :func:`read_image`.
    max_bytes : int, optional
        As :func:`read_image`, for each file.

    Returns
    -------
    ndarray, shape (N, C, H, W)

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> paths = [os.path.join(folder, f"{i}.png") for i in range(3)]
    >>> for i, p in enumerate(paths):
    ...     write_image(p, np.full((3, 4, 5), i / 2))
    >>> read_images(paths).shape
    (3, 3, 4, 5)
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ParameterTypeError("paths", f"paths must be a sequence of paths (use read_image for one), got {paths!r}")
    paths = list(paths)
    if not paths:
        raise ParameterError("paths", "paths must name at least one image file, got an empty sequence")
    images = [read_image(p, mode=mode, dtype=dtype, scale=scale, max_bytes=max_bytes) for p in paths]
    first = images[0].shape[1:]
    for p, img in zip(paths, images):
        if img.shape[1:] != first:
            raise ParameterError(
                "paths", f"all images must have the same (C, H, W); {paths[0]!r} has {first} but {p!r} has "
                f"{img.shape[1:]} (pass mode= to agree on channels, resize to agree on size)"
            )
    return np.concatenate(images, axis=0)


def write_image(path, x, *, clip=True, normalize=False, scale=True) -> None:
    """Write one image ``(C, H, W)`` or ``(1, C, H, W)`` to a file (8 bits per sample).

    Parameters
    ----------
    path : str or os.PathLike
        The format follows the extension (``.png`` keeps every value exactly).
    x : array, shape (C, H, W) or (1, C, H, W)
        ``C`` = 1 (grayscale), 3 (RGB) or 4 (RGBA).  Finite real values.
    clip : bool
        True: values outside the range are clipped to it.  False: they raise
        a ValueError (nothing is written).
    normalize : bool
        Map ``min(x)..max(x)`` linearly onto the range first (for signed
        outputs such as a transposed convolution's); a constant image becomes 0.
    scale : bool
        True: ``x`` is in ``[0, 1]`` and is written as ``round(255 x)``.
        False: ``x`` is already in ``[0, 255]`` and is written as ``round(x)``.

    Notes
    -----
    Stored sample = ``round(255 * clip(x, 0, 1))`` with ``scale=True``;
    reading it back with :func:`read_image` gives ``x`` to within ``0.5/255``
    for ``x`` in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "signed.png")
    >>> write_image(path, np.array([[[-1.0, 0.0, 3.0]]]), normalize=True)
    >>> read_image(path, scale=False)[0, 0]
    array([[  0.,  64., 255.]])
    """
    Image = _pil()
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ParameterTypeError("path", f"path must be a str or os.PathLike, got {type(path).__name__}")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise ParameterTypeError("x", f"x must be an array of real numbers, got dtype {x.dtype}")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ParameterError("x", f"x must have shape (C, H, W) or (1, C, H, W), got {x.shape}; write one image per file")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ParameterError("x", f"x must have shape (C, H, W) or (1, C, H, W) with C in (1, 3, 4), got {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ParameterError("x", "x must be finite; it holds NaN or infinity")
    top = 1.0 if scale else 255.0
    if normalize:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) * (top / (hi - lo)) if hi > lo else np.zeros_like(x)
    if clip:
        x = np.clip(x, 0.0, top)
    elif x.size and (x.min() < 0.0 or x.max() > top):
        raise ParameterError(
            "x", f"x has values in [{x.min():.4g}, {x.max():.4g}], outside [0, {top:g}]; pass clip=True to clip "
            f"them or normalize=True to rescale"
        )
    samples = np.rint(x * (255.0 / top)).astype(np.uint8)
    # uint8 (H, W) is read as 'L', (H, W, 3) as 'RGB', (H, W, 4) as 'RGBA'.
    arr = samples[0] if samples.shape[0] == 1 else np.moveaxis(samples, 0, -1)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
