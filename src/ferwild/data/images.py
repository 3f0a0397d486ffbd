"""Robust image loading for ``ferwild prepare``.

``prepare`` reads thousands of user-supplied files ("in the wild" really means it: phone
photos with EXIF rotation, CMYK scans, 16-bit medical-style PNGs, transparent PNG cut-outs,
GIFs, truncated downloads, text files renamed to ``.jpg``, ...). A single bad file must never
abort a long run, so this module has one contract:

* every usable file comes back as a :class:`LoadedImage` holding an ``(H, W, 3)`` ``uint8`` RGB
  array, with ``notes`` saying what had to be done to get there;
* every unusable file raises :class:`ImageRejected` with a short human-readable ``reason``, and
  nothing else (OSError, PIL's own exceptions, ValueError, MemoryError, ... are all translated).

Design choices worth knowing about:

* The file is read into memory once (:func:`load_image`) and decoded from a ``BytesIO``
  (:func:`load_image_bytes`, the shared core), so every I/O problem is caught in one place and
  every decoding problem in another.
* PIL's global ``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are never
  modified, and neither are the ``warnings`` filters: both are process-wide, and
  ``warnings.catch_warnings`` is not thread-safe on Python < 3.14, so "temporarily" changing them
  would leak into other threads of a multi-threaded ``prepare``. Instead the pixel count read from
  the header is checked *before* decoding, against ``max_pixels`` and also against PIL's own
  limit, so every file for which PIL would emit a ``DecompressionBombWarning`` is rejected
  anyway (and if the warning or ``DecompressionBombError`` is raised as an exception, it is
  translated too).
* ``img.load()`` is called inside the guard, so truncated data is detected here rather than later
  when somebody first touches the pixels.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageRejected",
    "LoadedImage",
    "load_image",
    "load_image_bytes",
    "pil_to_rgb",
    "to_grayscale_if_gray",
]

#: PIL's default ``Image.MAX_IMAGE_PIXELS`` (about 0.25 GB for a 24-bit image). Images whose
#: header declares more pixels than this are rejected as possible decompression bombs.
DEFAULT_MAX_PIXELS = 89_478_485

# Modes that carry an alpha channel (premultiplied "La"/"RGBa" included). They are composited
# onto white: a transparent cut-out of a face should look like a face on a plain background,
# not like a face on whatever garbage RGB values the transparent pixels happen to store.
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})

# Formats PIL can identify but whose decoding runs an external program (EPS -> Ghostscript).
# A file from the wild must not make ``prepare`` spawn an interpreter for PostScript.
_REFUSED_FORMATS = frozenset({"EPS"})

_WHITE = (255, 255, 255, 255)

# ISO-BMFF brands of HEIC/HEIF (iPhone photos), which stock Pillow cannot decode.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"})


class ImageRejected(Exception):
    """A file that cannot be used as an image; ``.reason`` is a short human-readable reason.

    ``str(exc)`` is the reason too. ``.source`` is the path (or the ``name`` given to
    :func:`load_image_bytes`) of the rejected file when known, else ``None``; it survives
    pickling, so rejections can be reported from worker processes.
    """

    source: str | None = None

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason: str = reason


@dataclass
class LoadedImage:
    """A decoded image, normalised to 8-bit RGB.

    Attributes:
        array: ``(H, W, 3)`` ``uint8`` RGB, C-contiguous and writeable (owned by the caller).
        orig_mode: PIL mode of the file as stored, e.g. ``"L"``, ``"RGB"``, ``"CMYK"``,
            ``"I;16"``, ``"P"``, ``"RGBA"``.
        orig_size: ``(width, height)`` after EXIF transpose (so it matches ``array``).
        notes: what was done to make the image usable, in the order it was done, e.g.
            ``["animated: first of 3 frames", "exif-transposed", "palette->rgb",
            "alpha composited on white"]``. Empty for a plain RGB file.
    """

    array: np.ndarray
    orig_mode: str
    orig_size: tuple[int, int]
    notes: list[str]


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 8,
) -> LoadedImage:
    """Read and decode one image file into 8-bit RGB.

    The file is read into memory in one go, then decoded by :func:`load_image_bytes` (see there
    for the decoding rules and what ``max_pixels`` / ``min_side`` mean).

    Args:
        path: file to read. Symlinks are followed.
        max_pixels: reject images whose header declares more than this many pixels.
        min_side: reject images whose width or height is smaller than this.

    Returns:
        The decoded image.

    Raises:
        ImageRejected: for any file that cannot be used: missing, broken symlink, directory,
            not a regular file, permission denied, empty, not an image, corrupt or truncated,
            too large, too small, ... Nothing else is raised for a bad file.
        ValueError: only for invalid arguments (``max_pixels < 1`` or ``min_side < 0``);
            that is a programming error, not a bad file.
    """
    _check_args(max_pixels, min_side)
    name = os.fsdecode(os.fspath(path))
    try:
        data = _read_file(path)
    except ImageRejected as exc:
        exc.source = name
        raise
    return load_image_bytes(data, max_pixels=max_pixels, min_side=min_side, name=name)


def load_image_bytes(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 8,
    name: str = "<bytes>",
) -> LoadedImage:
    """Decode an encoded image (the bytes of a JPEG, PNG, GIF, TIFF, WebP, BMP, ...) to 8-bit RGB.

    Steps, in order (each adds a note when it changes something):

    1. Identify the format from the header; reject if PIL does not recognise it.
    2. Reject, *before* decoding any pixel, if ``width * height`` from the header exceeds
       ``max_pixels`` or PIL's global ``Image.MAX_IMAGE_PIXELS`` (whichever is smaller: this
       argument can tighten PIL's limit but not loosen it), or if a side is below ``min_side``.
    3. Multi-frame files (animated GIF/WebP/PNG, MPO, multi-page TIFF): the first frame is used.
    4. Decode fully (``img.load()``), so truncated or corrupt data is rejected here.
    5. Apply the EXIF orientation (``ImageOps.exif_transpose``); unreadable EXIF is ignored.
    6. Convert to RGB: grayscale/1-bit are replicated to 3 equal channels; palette and CMYK
       are converted; alpha (including palette/colour-key transparency) is composited onto
       white; 16-bit and 32-bit integer / float images are scaled to 8 bits (see
       ``_high_depth_to_u8``), never clipped.

    Args:
        data: the encoded file contents.
        max_pixels: reject images whose header declares more than this many pixels
            (default: PIL's default limit).
        min_side: reject images whose width or height is smaller than this.
        name: what to call the data in ``ImageRejected.source`` (e.g. the original path).

    Returns:
        The decoded image.

    Raises:
        ImageRejected: the data cannot be used as an image; nothing else is raised for bad data.
        ValueError: only for invalid arguments (``max_pixels < 1`` or ``min_side < 0``).
    """
    _check_args(max_pixels, min_side)
    try:
        if not data:
            raise ImageRejected("empty file")
        return _decode(data, max_pixels=max_pixels, min_side=min_side)
    except ImageRejected as exc:
        exc.source = name
        raise
    # Everything below is a translation of whatever PIL (or a plugin, or numpy) threw while
    # looking at untrusted bytes. Plugins raise a wide variety of exceptions on malformed
    # input (OSError, SyntaxError, struct.error, IndexError, ZeroDivisionError, ...), so the
    # last clause is deliberately broad: "never abort prepare on a bad file" wins. The
    # exception type is kept in the reason so that a genuine bug still stands out in reports.
    except Image.DecompressionBombError as exc:
        raise _with_source(ImageRejected(_bomb_reason(exc)), name) from exc
    except Image.DecompressionBombWarning as exc:  # only when warnings are turned into errors
        raise _with_source(ImageRejected(_bomb_reason(exc)), name) from exc
    except UnidentifiedImageError as exc:
        raise _with_source(ImageRejected(_unidentified_reason(data)), name) from exc
    except MemoryError as exc:
        raise _with_source(ImageRejected("out of memory while decoding"), name) from exc
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        # OSError: "image file is truncated", "broken data stream", decoder errors;
        # SyntaxError: PIL's historical "not a valid <format> file / broken PNG";
        # EOFError / ValueError: short reads and bad header fields.
        reason = f"truncated or corrupt image data: {_exc_text(exc)}"
        raise _with_source(ImageRejected(reason), name) from exc
    except Exception as exc:  # noqa: BLE001 - see the comment above
        reason = f"corrupt image data ({type(exc).__name__}: {_exc_text(exc)})"
        raise _with_source(ImageRejected(reason), name) from exc


def to_grayscale_if_gray(array) -> np.ndarray:
    """Collapse an RGB array whose three channels are identical to a single channel.

    Many "in the wild" datasets (FER2013 among them) store grayscale faces as RGB; models and
    caches can save two thirds of the memory by keeping them as one channel.

    Args:
        array: an ``(H, W, 3)`` array (anything ``np.asarray`` accepts).

    Returns:
        A new C-contiguous ``(H, W, 1)`` array of the same dtype when all three channels are
        equal everywhere; otherwise ``array`` itself, unchanged (also for inputs that are not
        ``(H, W, 3)``, e.g. an already single-channel ``(H, W, 1)`` array).
    """
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[2] != 3:
        return array
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return np.ascontiguousarray(a[..., :1])
    return array


# --------------------------------------------------------------------------------------------
# reading the file
# --------------------------------------------------------------------------------------------


def _check_args(max_pixels: int, min_side: int) -> None:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if min_side < 0:
        raise ValueError(f"min_side must be >= 0, got {min_side}")


def _read_file(path: str | os.PathLike) -> bytes:
    """Return the whole contents of a regular file, or raise ImageRejected saying why not."""
    # stat first: opening a FIFO would block forever and reading a character device such as
    # /dev/zero would never end, so only regular files are opened at all.
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        if os.path.islink(path):
            target = _readlink(path)
            raise ImageRejected(f"broken symlink (target {target!r} does not exist)") from None
        raise ImageRejected("file not found") from None
    except PermissionError:
        raise ImageRejected("permission denied") from None
    except (OSError, ValueError) as exc:  # ELOOP, ENAMETOOLONG, NUL byte in the path, ...
        raise ImageRejected(f"cannot access file: {_exc_text(exc)}") from None

    if stat.S_ISDIR(st.st_mode):
        raise ImageRejected("is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageRejected("not a regular file (device, pipe or socket)")

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except PermissionError:
        raise ImageRejected("permission denied") from None
    except IsADirectoryError:  # replaced by a directory since the stat
        raise ImageRejected("is a directory, not a file") from None
    except FileNotFoundError:  # deleted since the stat
        raise ImageRejected("file not found") from None
    except MemoryError:
        raise ImageRejected("file too large to read into memory") from None
    except OSError as exc:  # EIO on a failing disk, stale NFS handle, ...
        raise ImageRejected(f"cannot read file: {_exc_text(exc)}") from None

    if not data:
        raise ImageRejected("empty file")
    return data


def _readlink(path: str | os.PathLike) -> str:
    try:
        return os.fsdecode(os.readlink(path))
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


def _decode(data: bytes, *, max_pixels: int, min_side: int) -> LoadedImage:
    notes: list[str] = []
    with Image.open(io.BytesIO(data)) as img:
        orig_mode = img.mode
        if img.format in _REFUSED_FORMATS:
            raise ImageRejected(f"unsupported format {img.format} (needs an external interpreter)")

        # Header checks, before a single pixel is decoded: Image.open only parses the header,
        # so a 12000x12000 bomb costs a few hundred bytes of work here.
        width, height = img.size
        _check_size(width, height, max_pixels=max_pixels, min_side=min_side)

        n_frames = _frame_count(img)
        if n_frames != 1:
            img.seek(0)
            if n_frames:
                notes.append(f"animated: first of {n_frames} frames")
            else:
                notes.append("animated: first frame used")

        # Decode now, inside the caller's guard: without LOAD_TRUNCATED_IMAGES (which we never
        # set) a truncated file raises OSError here instead of yielding half-grey pixels.
        img.load()

        img = _exif_transpose(img, notes)
        orig_size = img.size
        array = pil_to_rgb(img, notes)

    # The contract: (H, W, 3) uint8, C-contiguous, matching orig_size.
    if array.shape != (orig_size[1], orig_size[0], 3) or array.dtype != np.uint8:
        raise ImageRejected(f"unexpected decoded shape {array.shape} {array.dtype}")
    return LoadedImage(
        array=np.ascontiguousarray(array), orig_mode=orig_mode, orig_size=orig_size, notes=notes
    )


def _check_size(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    pixels = width * height
    # PIL's own limit is honoured too (never loosened): an image PIL would warn about is
    # rejected even if the caller passed a larger max_pixels, so PIL's warning never has to be
    # intercepted through the (thread-unsafe) warnings machinery.
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    if pixels > limit:
        raise ImageRejected(
            f"image too large ({width} x {height} = {pixels} pixels > max {limit}): "
            "possible decompression bomb"
        )
    if width < max(min_side, 1) or height < max(min_side, 1):
        raise ImageRejected(
            f"image too small ({width} x {height}; each side must be >= {min_side})"
        )


def _frame_count(img: Image.Image) -> int:
    """Number of frames, or 0 when it cannot be counted (a damaged later frame)."""
    if not getattr(img, "is_animated", False):
        return 1
    try:
        # For GIF this walks every frame; bounded by the file size, and we only ever decode
        # frame 0 afterwards. Failure here must not cost us a usable first frame.
        return int(img.n_frames)
    except Exception:  # noqa: BLE001 - a broken later frame does not spoil frame 0
        return 0


def _exif_transpose(img: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation so the face is upright; unreadable EXIF is ignored."""
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            img = ImageOps.exif_transpose(img)
            notes.append("exif-transposed")
    except Exception:  # noqa: BLE001 - pixels are fine, only the metadata is broken
        notes.append("exif unreadable: orientation ignored")
    return img


def pil_to_rgb(img: Image.Image, notes: list[str] | None = None) -> np.ndarray:
    """Convert a loaded PIL image of any mode to an (H, W, 3) uint8 RGB array.

    Alpha is composited on white, palettes and 16-bit/CMYK/grey modes are converted; what was
    done is appended to ``notes`` (e.g. ``"palette->rgb"``) when given.
    """
    notes = [] if notes is None else notes
    mode = img.mode
    has_key_transparency = "transparency" in img.info

    if mode == "RGB" and not has_key_transparency:
        return np.array(img, dtype=np.uint8)

    if mode == "P":
        notes.append("palette->rgb")
        palette_has_alpha = img.palette is not None and img.palette.mode == "RGBA"
        if has_key_transparency or palette_has_alpha:
            return _composite_on_white(img.convert("RGBA"), notes)
        return np.array(img.convert("RGB"), dtype=np.uint8)

    if mode in _ALPHA_MODES:
        return _composite_on_white(img.convert("RGBA"), notes)

    if mode in ("1", "L", "RGB") and has_key_transparency:
        # Colour-key transparency (PNG tRNS on a grey/RGB image): PIL turns it into alpha.
        if mode != "RGB":
            notes.append("1-bit->rgb" if mode == "1" else "gray->rgb")
        return _composite_on_white(img.convert("RGBA"), notes)

    if mode == "L":
        notes.append("gray->rgb")
        return np.array(img.convert("RGB"), dtype=np.uint8)

    if mode == "1":
        notes.append("1-bit->rgb")
        return np.array(img.convert("RGB"), dtype=np.uint8)  # 0 -> 0, 1 -> 255

    if mode == "CMYK":
        # PIL's conversion is the naive one (no ICC profile); good enough to find a face.
        notes.append("cmyk->rgb")
        return np.array(img.convert("RGB"), dtype=np.uint8)

    if mode.startswith("I") or mode == "F":
        gray = _high_depth_to_u8(img, notes)
        return np.repeat(gray[:, :, None], 3, axis=2)

    # YCbCr, HSV, LAB, legacy BMP modes, ...: let PIL convert if it can.
    try:
        rgb = img.convert("RGB")
    except ValueError as exc:
        raise ImageRejected(f"unsupported colour mode {mode}") from exc
    notes.append(f"{mode.lower()}->rgb")
    return np.array(rgb, dtype=np.uint8)


def _composite_on_white(rgba: Image.Image, notes: list[str]) -> np.ndarray:
    """Alpha-composite an RGBA image onto an opaque white background (in C, not in numpy)."""
    background = Image.new("RGBA", rgba.size, _WHITE)
    out = Image.alpha_composite(background, rgba).convert("RGB")
    notes.append("alpha composited on white")
    return np.array(out, dtype=np.uint8)


def _high_depth_to_u8(img: Image.Image, notes: list[str]) -> np.ndarray:
    """Scale a 16-bit / 32-bit integer or float single-channel image to an (H, W) uint8 array.

    PIL's own ``convert("L")`` *clips* these modes at 255, which turns a normal 16-bit photo
    into a white sheet, so the scaling is done here instead:

    * ``I;16*`` (16-bit PNG/TIFF): divided by ``2**bits - 1`` where ``bits`` is the stored bit
      depth (TIFF ``BitsPerSample`` when it says fewer than 16, e.g. 12-bit camera data; else 16),
      so 65535 -> 255 and 32768 -> 128.
    * ``I`` (32-bit int; no intrinsic depth): from a PNG it is 16-bit data (older Pillow);
      from a TIFF with ``BitsPerSample`` <= 16 that depth is used; otherwise the depth is taken
      from the values: within 0..255 kept as is, within 0..65535 treated as 16-bit, anything
      else linearly stretched from [min, max] to [0, 255].
    * ``F`` (float): within [0, 1] multiplied by 255, within [0, 255] rounded, anything else
      stretched from [min, max]; NaN/inf are replaced by the minimum finite value.
    """
    mode = img.mode
    values = np.asarray(img)
    if values.ndim != 2:
        raise ImageRejected(f"unsupported colour mode {mode}")

    if mode == "F":
        return _float_to_u8(values.astype(np.float64, copy=False), notes, label="float")

    if mode.startswith("I;16"):
        bits = _tiff_bits(img) or 16
        notes.append(f"{bits}-bit scaled to 8-bit")
        return _scale_by_depth(values.astype(np.uint32), bits)

    if mode == "I":
        bits = 16 if img.format == "PNG" else _tiff_bits(img)
        if bits:
            notes.append(f"{bits}-bit scaled to 8-bit")
            return _scale_by_depth(np.clip(values, 0, None).astype(np.uint32), bits)
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 255:
            notes.append("32-bit int (values 0-255) cast to 8-bit")
            return values.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            notes.append("16-bit scaled to 8-bit")
            return _scale_by_depth(values.astype(np.uint32), 16)
        return _stretch(values.astype(np.float64), lo, hi, notes, label="32-bit int")

    # Other exotic integer modes ("I;32", "I;16S"...) if PIL ever hands them over.
    return _float_to_u8(values.astype(np.float64), notes, label=mode)


def _tiff_bits(img: Image.Image) -> int | None:
    """TIFF BitsPerSample when it is a useful sub-16-bit depth (e.g. 10, 12, 14), else None."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(258)
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    try:
        bits = int(bits) if bits is not None else None
    except (TypeError, ValueError):
        return None
    return bits if bits is not None and 9 <= bits <= 16 else None


def _scale_by_depth(values: np.ndarray, bits: int) -> np.ndarray:
    """Integer rounding of ``v * 255 / (2**bits - 1)``; values above the depth saturate."""
    top = (1 << bits) - 1
    v = np.minimum(values.astype(np.uint32, copy=False), top)
    return ((v * 255 + top // 2) // top).astype(np.uint8)  # v * 255 < 2**24 fits in uint32


def _float_to_u8(values: np.ndarray, notes: list[str], *, label: str) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageRejected(f"{label} image has no finite pixel values")
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if not finite.all():
        values = np.where(finite, values, lo)
        notes.append("non-finite values replaced")
    if lo >= 0.0 and hi <= 1.0:
        notes.append(f"{label} [0, 1] scaled to 8-bit")
        return np.rint(values * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        notes.append(f"{label} [0, 255] rounded to 8-bit")
        return np.rint(values).astype(np.uint8)
    return _stretch(values, lo, hi, notes, label=label)


def _stretch(
    values: np.ndarray, lo: float, hi: float, notes: list[str], *, label: str
) -> np.ndarray:
    notes.append(f"{label} range [{lo:g}, {hi:g}] stretched to 8-bit")
    if hi <= lo:  # constant image outside any known range
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - lo) * 255.0 / (hi - lo)  # multiply first: exact for integer inputs
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# reasons
# --------------------------------------------------------------------------------------------


def _with_source(exc: ImageRejected, name: str) -> ImageRejected:
    exc.source = name
    return exc


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


_BOMB_RE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


def _bomb_reason(exc: BaseException) -> str:
    """Reason for PIL's own bomb check (it fires inside Image.open / seek, before our check)."""
    m = _BOMB_RE.search(str(exc))
    if m:
        pixels, limit = m.groups()
        return f"image too large ({pixels} pixels > max {limit}): possible decompression bomb"
    return f"image too large: possible decompression bomb ({exc})"


def _unidentified_reason(data: bytes) -> str:
    """Say what unidentifiable data looks like, to help users clean up their folders."""
    head = data[:64]
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "not an image PIL can read (HEIC/HEIF; convert it to JPEG or PNG)"
    try:
        # Incremental decoder with final=False: a multi-byte character cut at byte 512 is fine.
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:512], final=False)
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "not an image (file contains text)"
    return "not an image (unrecognised file format)"
