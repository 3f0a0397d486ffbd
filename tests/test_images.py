"""Tests for ferwild.data.images: robust loading of images "from the wild".

Every file is built on the fly in tmp_path (no binary fixtures in the repository). The real
photos in ../shared/data are used when present and skipped with a reason otherwise.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import pickle
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data_dir
from PIL import Image, ImageFile

from ferwild.data import images
from ferwild.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    LoadedImage,
    load_image,
    load_image_bytes,
    to_grayscale_if_gray,
)

SHARED_DATA = shared_data_dir()
FACE_PHOTOS = SHARED_DATA / "face_photos"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def noise_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def rejected(fn, *args, **kwargs) -> ImageRejected:
    """Call fn expecting ImageRejected (and nothing else); return the exception."""
    with pytest.raises(ImageRejected) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value.reason, str) and info.value.reason
    assert str(info.value) == info.value.reason
    return info.value


def assert_rgb_u8(result: LoadedImage) -> None:
    assert isinstance(result, LoadedImage)
    a = result.array
    assert a.dtype == np.uint8
    assert a.ndim == 3 and a.shape[2] == 3
    assert a.flags["C_CONTIGUOUS"]
    assert (a.shape[1], a.shape[0]) == result.orig_size


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black mode "1" PNG (bit depth 1, greyscale) of any declared size.

    Built by hand, streaming the zlib data, so a 12000 x 12000 image costs a few kB on disk and
    never exists as pixels in this process (Image.new would allocate 144 MB first).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    comp = zlib.compressobj(9)
    parts = []
    block = row * 500
    for _ in range(height // 500):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * (height % 500)))
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def decode_spy(monkeypatch):
    """Record every pixel decode (ImageFile.load) so tests can prove nothing was decoded."""
    calls = []
    real_load = ImageFile.ImageFile.load

    def spy(self, *args, **kwargs):
        calls.append(self.size)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


# ------------------------------------------------------------------------------------------
# normal files
# ------------------------------------------------------------------------------------------


def test_rgb_png_is_loaded_unchanged(tmp_path):
    pixels = noise_rgb(17, 23)
    path = write(tmp_path, "a.png", encode(Image.fromarray(pixels), "PNG"))

    result = load_image(path)

    assert_rgb_u8(result)
    assert result.array.shape == (17, 23, 3)
    np.testing.assert_array_equal(result.array, pixels)
    assert result.orig_mode == "RGB"
    assert result.orig_size == (23, 17)
    assert result.notes == []
    assert result.array.flags["WRITEABLE"]  # the caller owns it


def test_rgb_jpeg_is_loaded_as_pil_decodes_it(tmp_path):
    pixels = noise_rgb(40, 30, seed=1)
    path = write(tmp_path, "a.jpg", encode(Image.fromarray(pixels), "JPEG", quality=90))

    result = load_image(str(path))  # str and Path both accepted

    assert_rgb_u8(result)
    assert result.array.shape == (40, 30, 3)
    with Image.open(path) as ref:
        np.testing.assert_array_equal(result.array, np.asarray(ref))
    assert result.orig_mode == "RGB"
    assert result.notes == []


def test_load_image_bytes_is_the_same_core(tmp_path):
    pixels = noise_rgb(9, 11, seed=2)
    data = encode(Image.fromarray(pixels), "PNG")

    from_bytes = load_image_bytes(data)
    from_file = load_image(write(tmp_path, "b.png", data))

    np.testing.assert_array_equal(from_bytes.array, pixels)
    np.testing.assert_array_equal(from_file.array, from_bytes.array)
    assert from_bytes.notes == from_file.notes == []


# ------------------------------------------------------------------------------------------
# files that are not usable images
# ------------------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    exc = rejected(load_image, write(tmp_path, "empty.jpg", b""))
    assert exc.reason == "empty file"
    assert rejected(load_image_bytes, b"").reason == "empty file"


def test_truncated_jpeg_is_rejected_not_padded(tmp_path):
    data = encode(Image.fromarray(noise_rgb(64, 64, seed=3)), "JPEG", quality=95)
    path = write(tmp_path, "cut.jpg", data[: len(data) // 2])

    exc = rejected(load_image, path)

    assert exc.reason.startswith("truncated or corrupt image data")
    # The module must not have switched PIL into "fill truncated images with grey" mode.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_rejected(tmp_path):
    data = encode(Image.fromarray(noise_rgb(64, 64, seed=4)), "PNG")
    exc = rejected(load_image, write(tmp_path, "cut.png", data[: len(data) // 2]))
    assert exc.reason.startswith("truncated or corrupt image data")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not the pixels you are looking for\n" * 20)

    exc = rejected(load_image, path)

    assert exc.reason.startswith("not an image")
    assert "text" in exc.reason


def test_random_binary_is_not_an_image():
    data = bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8))
    data = b"\x00\xff" + data  # make sure it is not valid UTF-8
    exc = rejected(load_image_bytes, data)
    assert exc.reason == "not an image (unrecognised file format)"


def test_heic_gets_a_helpful_reason():
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    assert "HEIC" in rejected(load_image_bytes, data).reason


# ------------------------------------------------------------------------------------------
# decompression bombs and size limits
# ------------------------------------------------------------------------------------------


# PIL itself warns inside Image.open (we deliberately leave the process-wide warning filters
# alone); the file is rejected by our own header check either way.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_rejected_with_default_limit_without_decoding(tmp_path, decode_spy):
    data = bilevel_png(12000, 12000)
    assert len(data) < 100_000  # 144 Mpx declared in a small file: that's the bomb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as probe:  # it is a genuine, well-formed PNG
            assert (probe.size, probe.mode) == ((12000, 12000), "1")
    path = write(tmp_path, "bomb.png", data)
    max_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)

    t0 = time.perf_counter()
    exc = rejected(load_image, path)
    elapsed = time.perf_counter() - t0

    assert exc.reason == (
        f"image too large (12000 x 12000 = 144000000 pixels > max {DEFAULT_MAX_PIXELS}): "
        "possible decompression bomb"
    )
    assert decode_spy == []  # the 144 MB image was never decoded
    assert elapsed < 1.0
    # Nothing global was changed to get there.
    assert Image.MAX_IMAGE_PIXELS == max_before
    assert list(warnings.filters) == filters_before


def test_decompression_bomb_error_from_pil_is_translated(decode_spy):
    # Beyond twice PIL's limit, Image.open itself raises DecompressionBombError.
    data = bilevel_png(20000, 20000)
    exc = rejected(load_image_bytes, data)
    assert exc.reason.startswith("image too large (400000000 pixels > max ")
    assert exc.reason.endswith("possible decompression bomb")
    assert decode_spy == []


def test_max_pixels_is_honoured(decode_spy):
    data = encode(Image.fromarray(noise_rgb(64, 64, seed=6)), "PNG")

    exc = rejected(load_image_bytes, data, max_pixels=4095)
    assert exc.reason == (
        "image too large (64 x 64 = 4096 pixels > max 4095): possible decompression bomb"
    )
    assert decode_spy == []

    assert load_image_bytes(data, max_pixels=4096).array.shape == (64, 64, 3)


def test_bilevel_png_under_an_explicit_limit_decodes():
    # The hand-made PNG is real: small ones decode to 0 (black) pixels...
    ok = load_image_bytes(bilevel_png(40, 30), max_pixels=1200)
    assert ok.array.shape == (30, 40, 3) and not ok.array.any()
    assert ok.orig_mode == "1" and ok.notes == ["1-bit->rgb"]
    # ...and the same builder at a larger size is rejected by an explicit max_pixels.
    exc = rejected(load_image_bytes, bilevel_png(2000, 1000), max_pixels=1_999_999)
    assert "2000 x 1000 = 2000000 pixels > max 1999999" in exc.reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pil_global_limit_is_respected_not_loosened(monkeypatch):
    # max_pixels can tighten PIL's limit but never loosen it (and the global is left alone).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    data = encode(Image.fromarray(noise_rgb(64, 64, seed=7)), "PNG")
    exc = rejected(load_image_bytes, data, max_pixels=10_000)
    assert exc.reason == (
        "image too large (64 x 64 = 4096 pixels > max 3000): possible decompression bomb"
    )
    assert Image.MAX_IMAGE_PIXELS == 3000


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_bomb_warning_raised_as_error_is_translated(monkeypatch):
    # With warnings-as-errors, Image.open raises the warning itself: still just a rejection.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    data = encode(Image.fromarray(noise_rgb(64, 64, seed=8)), "PNG")
    exc = rejected(load_image_bytes, data)
    assert "decompression bomb" in exc.reason
    assert "4096" in exc.reason


def test_tiny_image_rejected():
    data = encode(Image.new("RGB", (3, 3), (1, 2, 3)), "PNG")
    exc = rejected(load_image_bytes, data)
    assert exc.reason.startswith("image too small (3 x 3")
    assert "8" in exc.reason
    # One small side is enough.
    assert rejected(load_image_bytes, encode(Image.new("L", (100, 5)), "PNG")).reason.startswith(
        "image too small"
    )
    # min_side is a parameter.
    assert load_image_bytes(data, min_side=3).array.shape == (3, 3, 3)


def test_invalid_arguments_are_programming_errors():
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(ValueError):
        load_image_bytes(data, max_pixels=0)
    with pytest.raises(ValueError):
        load_image_bytes(data, min_side=-1)


# ------------------------------------------------------------------------------------------
# colour modes
# ------------------------------------------------------------------------------------------


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # pure cyan ink
    path = write(tmp_path, "cmyk.jpg", encode(img, "JPEG", quality=95))

    result = load_image(path)

    assert_rgb_u8(result)
    assert result.orig_mode == "CMYK"
    assert "cmyk->rgb" in result.notes
    r, g, b = result.array.reshape(-1, 3).mean(axis=0)
    assert r < 40 and g > 215 and b > 215


def test_16bit_png_scaled_by_bit_depth_not_clipped(tmp_path):
    values = np.array([0, 257, 1000, 32768, 65535, 65535, 0, 1000], dtype=np.uint16)
    gray16 = np.tile(values, (8, 1))
    path = write(tmp_path, "g16.png", encode(Image.fromarray(gray16), "PNG"))

    result = load_image(path)

    assert_rgb_u8(result)
    assert result.orig_mode in ("I;16", "I")  # "I" on older Pillow
    assert "16-bit scaled to 8-bit" in result.notes
    row = result.array[0, :, 0]
    # 1000 would be 255 if PIL's clipping convert("L") were used.
    np.testing.assert_array_equal(row, [0, 1, 4, 128, 255, 255, 0, 4])
    assert abs(int(row[3]) - 128) <= 1
    np.testing.assert_array_equal(result.array[..., 0], result.array[..., 1])
    np.testing.assert_array_equal(result.array[..., 1], result.array[..., 2])


def test_16bit_tiff_scaled():
    gray16 = np.tile(np.array([0, 32768, 65535, 1000], dtype=np.uint16), (8, 2))
    result = load_image_bytes(encode(Image.fromarray(gray16), "TIFF"))
    assert result.orig_mode == "I;16"
    np.testing.assert_array_equal(result.array[0, :4, 0], [0, 128, 255, 4])


@pytest.mark.parametrize(
    ("values", "expected", "note"),
    [
        # 32-bit int holding 8-bit data: kept as is.
        ([0, 7, 128, 255], [0, 7, 128, 255], "32-bit int (values 0-255) cast to 8-bit"),
        # 32-bit int holding 16-bit data: scaled like a 16-bit image.
        ([0, 1000, 32768, 65535], [0, 4, 128, 255], "16-bit scaled to 8-bit"),
        # Anything else: stretched from its own range.
        (
            [-100, 0, 100, 300],
            [0, 64, 128, 255],
            "32-bit int range [-100, 300] stretched to 8-bit",
        ),
    ],
)
def test_32bit_int_tiff_scaled_from_its_range(values, expected, note):
    arr = np.tile(np.array(values, dtype=np.int32), (8, 2))
    result = load_image_bytes(encode(Image.fromarray(arr), "TIFF"))
    assert result.orig_mode == "I"
    assert note in result.notes
    np.testing.assert_array_equal(result.array[0, :4, 0], expected)
    assert result.array.dtype == np.uint8


@pytest.mark.parametrize(
    ("values", "expected", "note"),
    [
        ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255], "float [0, 1] scaled to 8-bit"),
        ([0.0, 10.4, 127.6, 255.0], [0, 10, 128, 255], "float [0, 255] rounded to 8-bit"),
        ([-1.0, 0.0, 1.0, 3.0], [0, 64, 128, 255], "float range [-1, 3] stretched to 8-bit"),
        ([np.nan, 0.0, 0.5, 1.0], [0, 0, 128, 255], "non-finite values replaced"),
    ],
)
def test_float_tiff_scaled_from_its_range(values, expected, note):
    arr = np.tile(np.array(values, dtype=np.float32), (8, 2))
    result = load_image_bytes(encode(Image.fromarray(arr), "TIFF"))
    assert result.orig_mode == "F"
    assert note in result.notes
    np.testing.assert_array_equal(result.array[0, :4, 0], expected)


def test_float_image_without_finite_values_rejected():
    arr = np.full((8, 8), np.nan, dtype=np.float32)
    exc = rejected(load_image_bytes, encode(Image.fromarray(arr), "TIFF"))
    assert "no finite" in exc.reason


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[:, :6] = (10, 20, 30, 0)  # transparent, with junk colour underneath
    rgba[:, 6:] = (200, 100, 50, 255)  # opaque
    rgba[0, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = write(tmp_path, "cutout.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"))

    result = load_image(path)

    assert_rgb_u8(result)
    assert result.orig_mode == "RGBA"
    assert "alpha composited on white" in result.notes
    assert (result.array[1:, :6] == 255).all()
    assert (result.array[:, 6:] == (200, 100, 50)).all()
    assert np.all(np.abs(result.array[0, 0].astype(int) - 127) <= 1)


def test_la_composited_on_white():
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[:, :4] = (77, 0)
    la[:, 4:] = (77, 255)
    result = load_image_bytes(encode(Image.fromarray(la, "LA"), "PNG"))
    assert result.orig_mode == "LA"
    assert "alpha composited on white" in result.notes
    assert (result.array[:, :4] == 255).all()
    assert (result.array[:, 4:] == 77).all()


def _palette_image() -> Image.Image:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0, 0, 0] * 253)
    px = img.load()
    for x in range(8):
        for y in range(4, 8):
            px[x, y] = 1  # bottom half: index 1 (blue)
    return img


def test_palette_to_rgb():
    result = load_image_bytes(encode(_palette_image(), "PNG"))
    assert result.orig_mode == "P"
    assert result.notes == ["palette->rgb"]
    assert (result.array[:4] == (255, 0, 0)).all()
    assert (result.array[4:] == (0, 0, 255)).all()


def test_palette_with_transparency():
    result = load_image_bytes(encode(_palette_image(), "PNG", transparency=1))
    assert result.orig_mode == "P"
    assert result.notes == ["palette->rgb", "alpha composited on white"]
    assert (result.array[:4] == (255, 0, 0)).all()  # opaque index keeps its colour
    assert (result.array[4:] == 255).all()  # transparent index becomes white


def test_grayscale_l_to_three_equal_channels():
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (9, 1))
    result = load_image_bytes(encode(Image.fromarray(gray, "L"), "PNG"))
    assert result.orig_mode == "L"
    assert result.notes == ["gray->rgb"]
    for c in range(3):
        np.testing.assert_array_equal(result.array[..., c], gray)


def test_bilevel_1_to_black_and_white():
    img = Image.new("1", (10, 10), 0)
    img.paste(1, (0, 0, 5, 10))
    result = load_image_bytes(encode(img, "PNG"))
    assert result.orig_mode == "1"
    assert (result.array[:, :5] == 255).all()
    assert (result.array[:, 5:] == 0).all()


# ------------------------------------------------------------------------------------------
# EXIF orientation and animation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "corner"), [(6, "top-right"), (8, "bottom-left")])
def test_exif_rotation_applied(tmp_path, orientation, corner):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # stored landscape: 40 wide, 20 high
    stored[:6, :6] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    path = write(tmp_path, f"rot{orientation}.jpg", data)

    result = load_image(path)

    assert_rgb_u8(result)
    assert result.array.shape == (40, 20, 3)  # displayed portrait
    assert result.orig_size == (20, 40)
    assert "exif-transposed" in result.notes
    # Orientation 6 = rotate 90 degrees clockwise to display: top-left goes to top-right;
    # orientation 8 = counter-clockwise: top-left goes to bottom-left.
    y, x = {"top-right": (2, 17), "bottom-left": (37, 2)}[corner]
    r, g, b = result.array[y, x].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert result.array[20, 10].max() < 60  # the middle stayed black


def test_exif_orientation_1_is_not_a_transpose():
    exif = Image.Exif()
    exif[0x0112] = 1
    result = load_image_bytes(encode(Image.new("RGB", (30, 10)), "JPEG", exif=exif))
    assert result.array.shape == (10, 30, 3)
    assert result.notes == []


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (16, 12), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)

    result = load_image_bytes(data)

    assert_rgb_u8(result)
    assert result.array.shape == (12, 16, 3)
    assert "animated: first of 3 frames" in result.notes
    assert result.notes[0] == "animated: first of 3 frames"
    assert result.orig_mode == "P"
    assert (result.array == (255, 0, 0)).all()


# ------------------------------------------------------------------------------------------
# file-system problems
# ------------------------------------------------------------------------------------------


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.png", encode(Image.new("RGB", (16, 16)), "PNG"))
    if os.geteuid() == 0:
        # root ignores chmod 000, so make opening exactly this file fail instead.
        real_open = builtins.open
        target = os.fspath(path)

        def fake_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == target:
                raise PermissionError(errno.EACCES, "Permission denied", target)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        exc = rejected(load_image, path)
    else:
        path.chmod(0o000)
        try:
            exc = rejected(load_image, path)
        finally:
            path.chmod(0o644)
    assert exc.reason == "permission denied"
    assert exc.source == str(path)


def test_directory(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    assert rejected(load_image, tmp_path / "folder.jpg").reason == "is a directory, not a file"


def test_broken_symlink(tmp_path):
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    exc = rejected(load_image, link)
    assert exc.reason.startswith("broken symlink")
    assert "gone.jpg" in exc.reason


def test_working_symlink_is_followed(tmp_path):
    target = write(tmp_path, "real.png", encode(Image.new("RGB", (9, 9), (1, 2, 3)), "PNG"))
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert (load_image(link).array == (1, 2, 3)).all()


def test_nonexistent_file(tmp_path):
    exc = rejected(load_image, tmp_path / "nope.jpg")
    assert exc.reason == "file not found"
    assert exc.source == str(tmp_path / "nope.jpg")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_not_opened(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # Opening a FIFO for reading would block forever; it must be refused up front.
    assert rejected(load_image, fifo).reason.startswith("not a regular file")


# ------------------------------------------------------------------------------------------
# robustness: whatever the bytes, only LoadedImage or ImageRejected
# ------------------------------------------------------------------------------------------


def _fuzz_sources() -> list[bytes]:
    base = Image.fromarray(noise_rgb(24, 24, seed=9))
    webp = ".webp" in Image.registered_extensions()
    return [
        encode(base, "JPEG", quality=80),
        encode(base, "PNG"),
        encode(base.convert("P"), "GIF"),
        encode(base, "BMP"),
        encode(base, "TIFF"),
        encode(base, "WEBP") if webp else encode(base, "PNG"),
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about corrupt TIFF/EXIF tags
def test_corrupted_bytes_never_raise_anything_else():
    rng = random.Random(1234)
    outcomes = {"ok": 0, "rejected": 0}
    for data in _fuzz_sources():
        variants = [data[:n] for n in range(0, len(data), max(1, len(data) // 25))]
        for _ in range(40):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            variants.append(bytes(mutated))
        for variant in variants:
            try:
                result = load_image_bytes(variant)
            except ImageRejected as exc:
                assert exc.reason
                outcomes["rejected"] += 1
            else:
                assert_rgb_u8(result)
                outcomes["ok"] += 1
    assert outcomes["rejected"] > 0


# ------------------------------------------------------------------------------------------
# ImageRejected and helpers
# ------------------------------------------------------------------------------------------


def test_image_rejected_pickles_with_reason_and_source():
    exc = rejected(load_image_bytes, b"garbage", name="some/file.jpg")
    assert exc.source == "some/file.jpg"
    copy = pickle.loads(pickle.dumps(exc))
    assert isinstance(copy, ImageRejected)
    assert copy.reason == exc.reason
    assert copy.source == "some/file.jpg"
    assert ImageRejected("x").reason == "x"


def test_to_grayscale_if_gray():
    gray = np.tile(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), (1, 1, 3))
    out = to_grayscale_if_gray(gray)
    assert out.shape == (3, 4, 1)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out[..., 0], gray[..., 0])

    colour = gray.copy()
    colour[1, 2, 0] = 99
    assert to_grayscale_if_gray(colour) is colour

    single = gray[..., :1].copy()
    assert to_grayscale_if_gray(single) is single


def test_loaded_grayscale_round_trips_through_to_grayscale_if_gray():
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))
    loaded = load_image_bytes(encode(Image.fromarray(gray, "L"), "PNG"))
    np.testing.assert_array_equal(to_grayscale_if_gray(loaded.array)[..., 0], gray)


def test_public_interface():
    assert DEFAULT_MAX_PIXELS == 89_478_485  # Pillow's own bomb limit
    assert issubclass(ImageRejected, Exception)
    assert all(callable(getattr(images, n)) or n.isupper() for n in images.__all__)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "I;16", "L"])
def test_in_memory_images_convert_like_files(tmp_path, mode):
    # a PIL image handed to the recogniser is converted exactly as the same image read from disk
    rgb = Image.new("RGB", (12, 10), (200, 40, 90))
    img = rgb.convert(mode) if mode != "RGBA" else Image.new("RGBA", (12, 10), (200, 40, 90, 128))
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    from_file = images.load_image(path).array
    notes: list[str] = []
    in_memory = images.pil_to_rgb(Image.open(path), notes)
    assert in_memory.shape == (10, 12, 3) and in_memory.dtype == np.uint8
    np.testing.assert_array_equal(in_memory, from_file)


# ------------------------------------------------------------------------------------------
# real photos (../shared/data, absent in a fresh clone)
# ------------------------------------------------------------------------------------------


def _shared_photos():
    if not FACE_PHOTOS.is_dir():
        return [pytest.param(None, id="absent")]
    files = sorted(p for p in FACE_PHOTOS.rglob("*") if p.is_file())
    return [pytest.param(p, id=p.relative_to(FACE_PHOTOS).as_posix()) for p in files]


@pytest.mark.shared_data
@pytest.mark.parametrize("photo", _shared_photos())
def test_real_photo_loads(photo):
    if photo is None:
        pytest.skip("../shared/data not present")
    result = load_image(photo)
    assert_rgb_u8(result)
    assert min(result.array.shape[:2]) >= 8
    if result.orig_mode == "RGBA":
        assert "alpha composited on white" in result.notes
    if result.orig_mode == "L":
        assert (result.array[..., 0] == result.array[..., 2]).all()


@pytest.mark.shared_data
def test_real_photos_include_the_awkward_ones():
    if not FACE_PHOTOS.is_dir():
        pytest.skip("../shared/data not present")
    names = {p.name for p in FACE_PHOTOS.rglob("*") if p.is_file()}
    assert {"32bit.png", "Image_with_alpha.png"} <= names
    for name in ("32bit.png", "Image_with_alpha.png"):
        (path,) = FACE_PHOTOS.rglob(name)
        result = load_image(path)
        assert_rgb_u8(result)
        assert result.orig_mode == "RGBA"
        assert result.notes == ["alpha composited on white"]
