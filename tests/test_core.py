"""The leaf layer (maskwatch.core): one redactor, one backoff, one name rule, one clock, one JPEG encoder."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from maskwatch.core.backoff import Backoff
from maskwatch.core.jpeg import encode_jpeg
from maskwatch.core.names import MAX_NAME, MAX_QUALIFIED_NAME, check_name, is_name, qualified, split_qualified
from maskwatch.core.redaction import redact
from maskwatch.core.timeutil import iso, parse_time, utc


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("rtsp://admin:pw@10.0.0.5/s1", "pw"),
        ("rtsp://cam:p@ss@10.0.0.5:554/stream", "p@ss"),  # a raw "@" in the password
        ("postgresql://mw:s3cr@t:x@db.local:5432/maskwatch", "s3cr@t:x"),
        ("mqtt://control:a:b@c@broker:1883", "a:b@c"),
        ("cannot open http://u:hunter2@cam.local/video.mjpg (timeout)", "hunter2"),
        ("host=db user=mw password=topsecret dbname=x", "topsecret"),
        ("https://hooks.example/x?token=abc123&y=1", "abc123"),
    ],
)
def test_redact_hides_any_password(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_keeps_what_is_not_a_secret() -> None:
    assert redact("webcam:0") == "webcam:0"
    assert redact("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact("mail me at a@b.c") == "mail me at a@b.c"
    assert redact("rtsp://u:p@h/a@b") == "rtsp://***@h/a@b"  # an "@" in the path is not user info
    assert redact("two: rtsp://a:1@h1/x and rtsp://b:2@h2/y") == "two: rtsp://***@h1/x and rtsp://***@h2/y"


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_its_band() -> None:
    b = Backoff(1.0, 8.0, jitter=0.2, _rng=random.Random(0))
    waits = [b.next() for _ in range(50)]
    assert all(0.8 <= w <= 9.6 for w in waits)
    assert len({round(w, 6) for w in waits[5:]}) > 1  # spread, not lockstep


@pytest.mark.parametrize("bad", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"jitter": 1.0}, {"factor": 0.5}])
def test_backoff_rejects_bad_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)


def test_names() -> None:
    assert is_name("door-1.a_b") and not is_name("-door") and not is_name("a b") and not is_name("a:b")
    assert is_name("x" * MAX_NAME) and not is_name("x" * (MAX_NAME + 1))
    with pytest.raises(ValueError, match="camera"):
        check_name("", "camera")
    name = qualified("x" * MAX_NAME, "y" * MAX_NAME)
    assert len(name) == MAX_QUALIFIED_NAME
    assert split_qualified(name) == ("x" * MAX_NAME, "y" * MAX_NAME)
    assert split_qualified("door") == (None, "door")


def test_time_is_aware_utc_everywhere() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z" and iso(None) is None
    assert utc(0).tzinfo is UTC
    naive = parse_time("2026-01-02T03:04:05")  # a node's naive time is UTC, not the server's zone
    assert naive == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    aware = parse_time("2026-01-02T03:04:05+02:00")
    assert aware.utcoffset() == timedelta(hours=2) and aware == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert parse_time("2026-01-02T03:04:05Z") == naive
    assert parse_time(0.0) == utc(0)
    assert parse_time(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))).tzinfo is not None


def test_encode_jpeg_round_trips_colour_order() -> None:
    import cv2

    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    data = encode_jpeg(red, quality=95)
    assert data[:2] == b"\xff\xd8"
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]  # BGR -> RGB
    assert back[..., 0].mean() > 240 and back[..., 2].mean() < 15
    with pytest.raises(ValueError):
        encode_jpeg(red, quality=0)
