"""Every kind of bad or unusual image file is decoded to RGB or refused with a clear reason."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from maskwatch.data.images import BadImageError, check_images, decode_rgb, load_rgb, max_pixels_limit


def _jpeg_bytes(size=(40, 30), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.jpg", b"this is a text file, not a picture\n" * 5, "not an image"),
        ("truncated.jpg", _jpeg_bytes((200, 200))[:400], "truncated"),
        ("garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "image"),
        ("photo.txt", _jpeg_bytes(), "unknown image extension"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert reason in info.value.reason
    assert info.value.path == str(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(BadImageError, match="cannot read"):
        load_rgb(tmp_path / "absent.jpg")


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 M pixels in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_rgb(path)


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.new("L", (20, 10), 128)),
        ("P", lambda: Image.new("RGB", (20, 10), (10, 200, 30)).convert("P")),
        ("RGBA", lambda: Image.new("RGBA", (20, 10), (255, 0, 0, 0))),
        ("LA", lambda: Image.new("LA", (20, 10), (0, 0))),
        ("CMYK", lambda: Image.new("CMYK", (20, 10), (0, 255, 255, 0))),
        ("I;16", lambda: Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16))),
        ("I", lambda: Image.fromarray(np.full((10, 20), 70000, dtype=np.int32))),
    ],
)
def test_exotic_modes_become_rgb(tmp_path, mode, make):
    image = make()
    suffix = ".jpg" if mode == "CMYK" else (".tif" if mode.startswith("I") else ".png")
    path = tmp_path / f"img{suffix}"
    image.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (20, 10)
    pixels = np.asarray(rgb)
    if mode in ("RGBA", "LA"):  # fully transparent pixels are flattened on white
        assert (pixels == 255).all()
    if mode == "I;16":
        assert (pixels == 255).all()
    if mode == "CMYK":  # C=0,M=255,Y=255,K=0 is red
        assert pixels[0, 0, 0] > 200 and pixels[0, 0, 1] < 60


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.size == (20, 40)
    pixels = np.asarray(upright).mean(axis=2)
    assert pixels[:20].mean() > 200 and pixels[20:].mean() < 50  # the white half is now on top


def test_check_images_reports_only_bad_files(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg_bytes())
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    skipped = check_images([good, bad], workers=2)
    assert [s.path for s in skipped] == [str(bad)]
    assert "empty" in skipped[0].reason


# -- one decoder for paths, bytes and files ------------------------------------------------------------


def _exif_rotated_jpeg() -> Image.Image:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))
    return image


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 10, 10))  # left half colour 1 (blue), right half colour 0 (red, transparent)
    image.info["transparency"] = 0
    return image


CASES = {
    "rgba.png": (lambda: Image.new("RGBA", (20, 10), (255, 0, 0, 0)), {}),
    "gray.png": (lambda: Image.new("L", (20, 10), 77), {}),
    "palette.png": (_palette_with_transparency, {"transparency": 0}),
    "rotated.jpg": (_exif_rotated_jpeg, {"exif": (lambda e: (e.__setitem__(0x0112, 6), e)[1])(Image.Exif()),
                                          "quality": 95}),
    "deep.png": (lambda: Image.fromarray(np.full((10, 20), 30000, dtype=np.uint16)), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_paths_bytes_and_files_decode_to_identical_pixels(tmp_path, name):
    make, save_options = CASES[name]
    path = tmp_path / name
    make().save(path, **save_options)
    data = path.read_bytes()
    from_path = decode_rgb(path)
    assert from_path.dtype == np.uint8 and from_path.ndim == 3 and from_path.shape[2] == 3
    assert from_path.flags.writeable
    for other in (data, bytearray(data), memoryview(data), io.BytesIO(data), str(path)):
        np.testing.assert_array_equal(decode_rgb(other), from_path)
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), from_path)
    if name == "rgba.png":  # fully transparent pixels are flattened on white
        assert (from_path == 255).all()
    if name == "palette.png":
        assert from_path[0, 0].tolist() == [0, 0, 255] and from_path[0, -1].tolist() == [255, 255, 255]
    if name == "rotated.jpg":
        assert from_path.shape == (40, 20, 3) and from_path[:20].mean() > 200 and from_path[20:].mean() < 50
    if name == "deep.png":  # 16 bit scaled to 8 bit, not clipped
        assert abs(int(from_path[0, 0, 0]) - round(30000 / 65535 * 255)) <= 1


def test_a_pil_image_is_flattened_on_white_too():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert (decode_rgb(rgba) == 255).all()


def test_empty_bytes_and_non_images_are_refused():
    with pytest.raises(BadImageError, match="empty"):
        decode_rgb(b"")
    with pytest.raises(BadImageError, match="not an image") as info:
        decode_rgb(b"hello, not a picture" * 4)
    assert info.value.path == "<bytes>"
    with pytest.raises(TypeError):
        decode_rgb(42)  # type: ignore[arg-type]


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares a huge size and holds no pixels: only a pixel check on the header can refuse it
    without allocating width x height."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_pixel_limit_refuses_a_huge_header_via_path_and_bytes(tmp_path):
    data = _header_only_png(100_000, 100_000)  # 10 G pixels declared in 57 bytes
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    before = Image.MAX_IMAGE_PIXELS
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(BadImageError, match="limit 64000000"):
            decode_rgb(source)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_rgb(path)
    assert Image.MAX_IMAGE_PIXELS is before


def test_pixel_limit_from_argument_environment_and_default(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), (1, 2, 3)).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert max_pixels_limit() == 64_000_000
    assert decode_rgb(data).shape == (100, 100, 3)
    with pytest.raises(BadImageError, match="limit 9999"):
        decode_rgb(data, max_pixels=9_999)
    monkeypatch.setenv("MASKWATCH_MAX_PIXELS", "5000")
    assert max_pixels_limit() == 5000
    with pytest.raises(BadImageError, match="limit 5000"):
        decode_rgb(data)
    assert decode_rgb(data, max_pixels=10_000).shape == (100, 100, 3)  # the argument wins
    monkeypatch.setenv("MASKWATCH_MAX_PIXELS", "0")
    assert max_pixels_limit() is None
    monkeypatch.setenv("MASKWATCH_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="MASKWATCH_MAX_PIXELS"):
        max_pixels_limit()


def test_pixel_limits_hold_per_call_across_threads():
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), (1, 2, 3)).save(buffer, format="PNG")
    data = buffer.getvalue()
    before = Image.MAX_IMAGE_PIXELS
    limits = [5_000, 20_000, 9_999, 10_000]  # two refuse 100 x 100, two accept it
    outcomes: dict[int, set[str]] = {limit: set() for limit in limits}
    start = threading.Barrier(len(limits))

    def work(limit: int) -> None:
        start.wait()
        for _ in range(100):
            try:
                decode_rgb(data, max_pixels=limit)
                outcomes[limit].add("ok")
            except BadImageError:
                outcomes[limit].add("refused")

    threads = [threading.Thread(target=work, args=(limit,)) for limit in limits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {5_000: {"refused"}, 20_000: {"ok"}, 9_999: {"refused"}, 10_000: {"ok"}}
    assert Image.MAX_IMAGE_PIXELS is before
