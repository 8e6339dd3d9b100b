"""Every kind of bad or unusual image file is decoded to RGB or refused with a clear reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from maskwatch.data.images import BadImageError, check_images, load_rgb


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
