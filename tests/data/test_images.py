"""Decoding rules for images as they come off camera-trap SD cards."""

from __future__ import annotations

import datetime as dt
import io
import os
import pickle
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin

from ecoclassify.data import images
from ecoclassify.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    classify_os_error,
    load_rgb,
    read_header,
)
from ecoclassify.errors import ConfigError, DataError

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def asymmetric(height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB array in which every pixel differs, so any flip or rotation is visible."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 5 % 256, cols * 3 % 256, (rows * width + cols) % 256], -1).astype(
        np.uint8
    )


def save(path: Path, image: Image.Image | np.ndarray, **kwargs) -> Path:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def expect_failure(reason: str, path: Path, **kwargs) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        load_rgb(path, **kwargs)
    assert info.value.reason == reason, info.value.detail
    return info.value


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose valid IHDR claims width x height but which holds one row of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(
        signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(asymmetric()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- formats that load -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "options", "tolerance"),
    [
        (".jpg", {"quality": 95}, 12),
        (".png", {}, 0),
        (".tif", {}, 0),
        (".bmp", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".webp", {"quality": 90}, 20),
    ],
)
def test_common_formats_load_as_uint8_rgb_at_full_size(tmp_path, suffix, options, tolerance):
    original = asymmetric()
    path = save(tmp_path / f"img{suffix}", original, **options)
    loaded = load_rgb(path)
    assert loaded.array.dtype == np.uint8
    assert loaded.array.shape == (48, 64, 3)
    assert (loaded.width, loaded.height, loaded.mode) == (64, 48, "RGB")
    assert np.abs(loaded.array.astype(int) - original).mean() <= tolerance


def test_a_requested_size_is_returned_exactly_as_height_then_width(tmp_path):
    path = save(tmp_path / "img.png", asymmetric(48, 64))
    loaded = load_rgb(path, size=(20, 30), resample="lanczos")
    assert loaded.array.shape == (20, 30, 3)
    assert (loaded.width, loaded.height) == (64, 48)


@pytest.mark.parametrize("bad", [{"size": (0, 10)}, {"size": (10,)}, {"resample": "cubic"}])
def test_invalid_arguments_are_config_errors_that_echo_the_value(tmp_path, bad):
    path = save(tmp_path / "img.png", asymmetric())
    with pytest.raises(ConfigError, match="Received"):
        load_rgb(path, **bad)


# --- broken files --------------------------------------------------------------------------


def test_a_zero_byte_jpeg_is_an_empty_failure(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    expect_failure("empty", path)


def test_a_jpeg_cut_in_half_is_a_truncated_failure(tmp_path, jpeg_bytes):
    path = tmp_path / "half.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    expect_failure("truncated", path)


def test_a_jpeg_cut_in_half_is_truncated_even_after_another_library_allowed_truncation_process_wide(
        tmp_path, jpeg_bytes, monkeypatch):
    # MegaDetector's visualization_utils sets this for the whole process when it is imported.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "half.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    with pytest.raises(ImageReadError) as caught:
        load_rgb(path, size=(16, 16))
    assert caught.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the other library's setting is left as it was


def test_a_jpeg_cut_in_half_loads_when_truncation_is_allowed(tmp_path, jpeg_bytes, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # as Pillow starts (another test's import may not)
    path = tmp_path / "half.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    loaded = load_rgb(path, allow_truncated=True)
    assert loaded.array.shape == (48, 64, 3)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # the Pillow global was restored


def test_a_jpeg_cut_inside_its_header_is_truncated_even_when_truncation_is_allowed(
    tmp_path, jpeg_bytes
):
    path = tmp_path / "header.jpg"
    path.write_bytes(jpeg_bytes[:200])  # inside the quantisation/Huffman tables
    expect_failure("truncated", path)
    expect_failure("truncated", path, allow_truncated=True)


def test_every_prefix_of_a_jpeg_is_empty_unreadable_or_truncated(tmp_path, jpeg_bytes):
    path = tmp_path / "cut.jpg"
    reasons = set()
    for length in list(range(0, 40)) + list(range(40, len(jpeg_bytes) - 2, 211)):
        path.write_bytes(jpeg_bytes[:length])
        with pytest.raises(ImageReadError) as info:
            load_rgb(path)
        reasons.add(info.value.reason)
    assert reasons == {"empty", "unreadable", "truncated"}


def test_a_png_cut_short_is_a_truncated_failure(tmp_path):
    path = save(tmp_path / "full.png", asymmetric())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_failure("truncated", path)
    assert load_rgb(path, allow_truncated=True).array.shape == (48, 64, 3)


def test_a_text_file_named_jpg_is_unreadable(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("deployment notes, not a photo\n")
    expect_failure("unreadable", path)


def test_a_zero_filled_file_is_unreadable_with_a_hint_about_the_card(tmp_path):
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes(b"\0" * 4096)
    assert "card" in expect_failure("unreadable", path).detail


def test_a_missing_file_is_not_found(tmp_path):
    expect_failure("not_found", tmp_path / "nope.jpg")


def test_a_folder_named_like_an_image_is_unreadable(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    expect_failure("unreadable", tmp_path / "folder.jpg")


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root can read files without read permission")
def test_a_file_without_read_permission_is_permission_denied(tmp_path):
    path = save(tmp_path / "locked.png", asymmetric())
    path.chmod(0)
    try:
        expect_failure("permission_denied", path)
    finally:
        path.chmod(0o644)


def test_a_permission_error_on_open_is_permission_denied(tmp_path, monkeypatch):
    # Runs even as root, where the chmod test above cannot.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", refuse, raising=False)
    expect_failure("permission_denied", tmp_path / "any.jpg")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (FileNotFoundError(2, "x"), "not_found"),
        (NotADirectoryError(20, "x"), "not_found"),
        (PermissionError(13, "x"), "permission_denied"),
        (IsADirectoryError(21, "x"), "unreadable"),
        (OSError(5, "Input/output error"), "unreadable"),
    ],
)
def test_os_errors_map_to_reason_codes(exc, reason):
    assert classify_os_error(exc) == reason


def test_read_errors_are_data_errors_that_survive_pickling(tmp_path):
    error = expect_failure("not_found", tmp_path / "nope.jpg")
    assert isinstance(error, DataError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, copy.detail) == (error.path, error.reason, error.detail)


# --- decompression bombs -------------------------------------------------------------------


def test_a_png_claiming_30000_by_30000_pixels_is_too_large_without_decoding(tmp_path):
    path = png_claiming_size(tmp_path / "bomb.png", 30000, 30000)
    expect_failure("too_large", path)
    with pytest.raises(ImageReadError, match="too_large"):
        read_header(path)


def test_the_pixel_cap_is_checked_from_the_header_before_decoding(tmp_path):
    # 64 MP is under Pillow's own limits (no warning either), so only our cap stops it.
    path = png_claiming_size(tmp_path / "big.png", 8000, 8000)
    expect_failure("too_large", path, max_pixels=50_000_000)
    with pytest.raises(ImageReadError, match="too_large"):
        read_header(path, max_pixels=50_000_000)
    assert read_header(path, max_pixels=None).width == 8000
    assert DEFAULT_MAX_PIXELS == 120_000_000


# --- colour modes --------------------------------------------------------------------------


def test_a_pure_red_cmyk_jpeg_reads_back_red(tmp_path):
    path = save(tmp_path / "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)), quality=95)
    loaded = load_rgb(path)
    assert loaded.mode == "CMYK"
    assert np.abs(loaded.array[16, 16].astype(int) - [255, 0, 0]).max() <= 6


def test_greyscale_is_copied_into_all_three_channels(tmp_path):
    grey = (asymmetric()[..., 2]).astype(np.uint8)
    loaded = load_rgb(save(tmp_path / "grey.png", grey))
    assert loaded.mode == "L"
    assert all(np.array_equal(loaded.array[..., c], grey) for c in range(3))


def test_a_palette_image_with_transparency_keeps_its_palette_colours(tmp_path):
    image = Image.new("P", (32, 32), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 16, 32))
    path = save(tmp_path / "palette.png", image, transparency=0)
    loaded = load_rgb(path)
    assert loaded.mode == "P"
    assert loaded.array[5, 5].tolist() == [0, 0, 255]
    assert loaded.array[5, 25].tolist() == [255, 0, 0]  # transparent pixels: alpha dropped


def test_alpha_is_dropped_rather_than_composited(tmp_path):
    path = save(tmp_path / "rgba.png", Image.new("RGBA", (32, 32), (10, 20, 30, 0)))
    loaded = load_rgb(path)
    assert loaded.mode == "RGBA"
    assert loaded.array[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "I;16"), (".tif", "I;16B")])
def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path, suffix, mode):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.frombytes(mode, (4, 1), values.astype(">u2" if mode.endswith("B") else "<u2"))
    loaded = load_rgb(save(tmp_path / f"deep{suffix}", image))
    assert loaded.mode.startswith("I;16")
    assert loaded.array[0, :, 0].tolist() == [0, 1, 128, 255]


def test_a_48_bit_png_keeps_the_high_byte_of_each_channel(tmp_path):
    raw = b"\x00" + struct.pack(">6H", 65535, 0, 0, 32768, 32768, 32768)
    ihdr = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)
    path = tmp_path / "deep_rgb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )
    assert load_rgb(path).array[0].tolist() == [[255, 0, 0], [128, 128, 128]]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # a 0..1 float image is scaled by 255
        ([10.0, 25.0, 40.0], [0, 128, 255]),  # physical units (degrees C) are stretched
        ([0.0, float("nan"), 1.0], [0, 0, 255]),
    ],
)
def test_float_images_are_scaled_by_the_documented_rule(tmp_path, values, expected):
    image = Image.fromarray(np.array([values], dtype=np.float32), "F")
    assert load_rgb(save(tmp_path / "float.tif", image)).array[0, :, 0].tolist() == expected


def test_32_bit_integer_images_holding_16_bit_values_scale_like_16_bit(tmp_path):
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32), "I")
    assert load_rgb(save(tmp_path / "int.tif", image)).array[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("LAB", (255, 128, 128), (255, 255, 255)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("1", 1, (255, 255, 255)),
        ("LA", (200, 0), (200, 200, 200)),
        ("PA", (0, 255), (0, 0, 0)),
    ],
)
def test_other_stored_modes_convert_to_rgb(tmp_path, mode, colour, expected):
    loaded = load_rgb(save(tmp_path / f"{mode}.tif", Image.new(mode, (8, 8), colour)))
    assert loaded.mode == mode
    assert np.abs(loaded.array[4, 4].astype(int) - expected).max() <= 2


# --- orientation, frames, draft ------------------------------------------------------------

# How each EXIF orientation maps the stored array to the displayed one (EXIF 2.32, tag 0x0112).
DISPLAYED = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_is_applied_for_every_orientation(tmp_path, orientation):
    stored = asymmetric(24, 40)
    path = save(tmp_path / "rotated.png", stored, exif=with_orientation(orientation))
    expected = DISPLAYED[orientation](stored)
    loaded = load_rgb(path)
    assert np.array_equal(loaded.array, expected)
    assert (loaded.height, loaded.width) == expected.shape[:2]
    header = read_header(path)
    assert (header.height, header.width) == expected.shape[:2]


def test_the_first_frame_of_a_multi_page_tiff_is_used(tmp_path):
    red, blue = Image.new("RGB", (16, 16), "red"), Image.new("RGB", (32, 8), "blue")
    path = save(tmp_path / "pages.tif", red, save_all=True, append_images=[blue])
    loaded = load_rgb(path)
    assert loaded.array.shape == (16, 16, 3)
    assert loaded.array[0, 0].tolist() == [255, 0, 0]


def test_the_first_frame_of_an_animated_png_is_used(tmp_path):
    red, blue = Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "blue")
    path = save(tmp_path / "anim.png", red, save_all=True, append_images=[blue])
    assert load_rgb(path).array[0, 0].tolist() == [255, 0, 0]


def quadrants(height: int, width: int) -> np.ndarray:
    array = np.zeros((height, width, 3), np.uint8)
    array[: height // 2, : width // 2] = (255, 0, 0)
    array[: height // 2, width // 2 :] = (0, 255, 0)
    array[height // 2 :, : width // 2] = (0, 0, 255)
    array[height // 2 :, width // 2 :] = (255, 255, 255)
    return array


@pytest.fixture
def draft_spy(monkeypatch):
    """Records the size a JPEG is decoded at after draft()."""
    sizes: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return sizes


def test_a_large_jpeg_is_drafted_then_resized_to_the_exact_size(tmp_path, draft_spy):
    path = save(tmp_path / "large.jpg", quadrants(2000, 3000), quality=85)
    loaded = load_rgb(path, size=(224, 224))
    assert loaded.array.shape == (224, 224, 3)
    assert (loaded.width, loaded.height) == (3000, 2000)
    assert draft_spy == [(375, 250)]  # decoded at 1/8 scale, still >= 224 on both sides
    assert np.abs(loaded.array[50, 50].astype(int) - [255, 0, 0]).max() <= 8


def test_a_rotated_large_jpeg_drafts_with_swapped_target_sides(tmp_path, draft_spy):
    stored = quadrants(2000, 3000)
    path = save(tmp_path / "rotated.jpg", stored, quality=85, exif=with_orientation(6))
    loaded = load_rgb(path, size=(300, 200))
    assert loaded.array.shape == (300, 200, 3)
    assert (loaded.width, loaded.height) == (2000, 3000)
    (drafted,) = draft_spy
    assert drafted[0] >= 300 and drafted[1] >= 200 and drafted[0] < 3000
    displayed = DISPLAYED[6](stored)
    for row, col in [(75, 50), (75, 150), (225, 50), (225, 150)]:
        reference = displayed[row * 10, col * 10].astype(int)
        assert np.abs(loaded.array[row, col].astype(int) - reference).max() <= 8


def test_a_jpeg_is_not_drafted_when_no_size_is_requested(tmp_path, draft_spy):
    load_rgb(save(tmp_path / "img.jpg", asymmetric()))
    assert draft_spy == []


# --- metadata ------------------------------------------------------------------------------


def exif_with_times(original: str | None, fallback: str | None) -> Image.Exif:
    exif = Image.Exif()
    if fallback is not None:
        exif[ExifTags.Base.DateTime] = fallback
    if original is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = original
    return exif


@pytest.mark.parametrize(
    ("original", "fallback", "expected"),
    [
        ("2023:07:14 05:31:02", "2024:01:01 00:00:00", dt.datetime(2023, 7, 14, 5, 31, 2)),
        (None, "2021:03:09 23:59:58", dt.datetime(2021, 3, 9, 23, 59, 58)),
        ("0000:00:00 00:00:00", None, None),
        ("garbage", "also garbage", None),
        (None, None, None),
    ],
)
def test_exif_capture_time_prefers_datetime_original_and_tolerates_junk(
    tmp_path, original, fallback, expected
):
    path = save(tmp_path / "dated.jpg", asymmetric(), exif=exif_with_times(original, fallback))
    assert load_rgb(path).datetime == expected
    assert read_header(path).datetime == expected


def test_read_header_does_not_decode_pixels(tmp_path, monkeypatch):
    exif = exif_with_times("2022:02:02 02:02:02", None)
    path = save(tmp_path / "img.jpg", asymmetric(), exif=exif)

    def no_decoding(self):
        raise AssertionError("read_header decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    header = read_header(path)
    assert (header.width, header.height, header.format, header.mode) == (64, 48, "JPEG", "RGB")
    assert header.datetime == dt.datetime(2022, 2, 2, 2, 2, 2)


# --- concurrency and resources -------------------------------------------------------------


def test_strict_and_tolerant_loads_can_run_in_parallel_threads(tmp_path, jpeg_bytes, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # as Pillow starts
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    good = save(tmp_path / "good.png", asymmetric())

    def attempt(i: int) -> str:
        if i % 3 == 0:
            return "loaded" if load_rgb(truncated, allow_truncated=True) else "?"
        try:
            load_rgb(truncated if i % 3 == 1 else good)
            return "loaded"
        except ImageReadError as exc:
            return exc.reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(150)))
    assert results == [["loaded", "truncated", "loaded"][i % 3] for i in range(150)]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_file_handles_are_closed_after_success_and_failure(tmp_path, jpeg_bytes):
    good = save(tmp_path / "good.jpg", asymmetric())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes[:300])
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        load_rgb(good, size=(16, 16))
        read_header(good)
        for path in (broken, text):
            with pytest.raises(ImageReadError):
                load_rgb(path)
    assert len(os.listdir("/proc/self/fd")) <= before


# --- special files and the decode budget ------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_character_device_is_not_a_regular_file_and_is_refused(device):
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    error = expect_failure("not_a_regular_file", Path(device))
    assert "never opened" in error.detail


def test_a_header_read_of_a_device_is_refused_too():
    if not Path("/dev/zero").exists():
        pytest.skip("/dev/zero does not exist here")
    with pytest.raises(ImageReadError) as info:
        read_header("/dev/zero")
    assert info.value.reason == "not_a_regular_file"


@pytest.fixture
def small_decode_budget():
    """A 50-megapixel budget for the test, the default restored afterwards."""
    from ecoclassify.data.budget import DECODE_BUDGET, DEFAULT_DECODE_PIXEL_BUDGET, set_decode_pixel_budget

    set_decode_pixel_budget(50_000_000)
    DECODE_BUDGET.reset_peak()
    yield DECODE_BUDGET
    set_decode_pixel_budget(DEFAULT_DECODE_PIXEL_BUDGET)


def test_the_decode_budget_keeps_concurrent_large_decodes_under_it(tmp_path, small_decode_budget):
    # 40 megapixels of one grey compress to a few kB on disk but cost 40 MB+ per decode.
    big = tmp_path / "big_0.png"
    Image.new("L", (8000, 5000), 128).save(big)
    assert big.stat().st_size < 1_000_000
    paths = [big] + [tmp_path / f"big_{i}.png" for i in range(1, 4)]
    for path in paths[1:]:
        path.write_bytes(big.read_bytes())
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(lambda p: load_rgb(p, size=(8, 8)), paths))
    assert [(image.width, image.height) for image in loaded] == [(8000, 5000)] * 4
    assert small_decode_budget.peak == 40_000_000  # one at a time: two would be 80 MP > 50 MP
    assert small_decode_budget.in_use == 0


def test_an_image_larger_than_the_whole_budget_still_decodes_alone(tmp_path, small_decode_budget):
    from ecoclassify.data.budget import set_decode_pixel_budget

    set_decode_pixel_budget(1_000)
    save(tmp_path / "a.png", asymmetric(48, 64))
    assert load_rgb(tmp_path / "a.png").array.shape == (48, 64, 3)
    assert small_decode_budget.peak == 1_000 and small_decode_budget.in_use == 0


def test_jpeg_decodes_reserve_only_their_drafted_pixels(tmp_path, small_decode_budget):
    Image.new("RGB", (800, 600), (10, 20, 30)).save(tmp_path / "a.jpg", quality=90)
    load_rgb(tmp_path / "a.jpg", size=(75, 100))
    assert small_decode_budget.peak == 100 * 75  # drafted by 1/8, not 800 x 600


def test_the_decode_budget_must_be_a_positive_integer():
    from ecoclassify.data.budget import set_decode_pixel_budget

    with pytest.raises(ConfigError, match="Received: 0"):
        set_decode_pixel_budget(0)
