"""Frame sources: parsing SOURCE arguments, images, video files (stride, damaged frames), live streams that
drop (reconnect with exponential backoff, then a clear error), including a real local MJPEG server."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.stream.sources import (
    ImageSource,
    SourceError,
    StreamLostError,
    StreamSource,
    VideoSource,
    parse_source,
)


def write_video(path: Path, n: int, size=(64, 48), fps=10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, : (i * 5) % size[0] + 1] = 200
        writer.write(frame)
    writer.release()
    return path


class FakeCapture:
    """A cv2.VideoCapture stand-in: plays a script of frames (None = a failed read) then ends."""

    def __init__(self, frames, opened=True, fps=10.0, count=None):
        self.frames = list(frames)
        self.opened = opened
        self.fps = fps
        self.count = len(self.frames) if count is None else count
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.frames:
            return False, None
        frame = self.frames.pop(0)
        return (frame is not None), frame

    def grab(self):
        ok, _ = self.read()
        return ok

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count}.get(prop, 0.0)

    def release(self):
        self.released = True


def frame(value=100):
    return np.full((6, 8, 3), value, np.uint8)


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


# -- parsing ---------------------------------------------------------------------------------------------


def test_parse_sources(tmp_path):
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert parse_source("webcam:1") == ("webcam", 1)
    assert parse_source("rtsp://cam.local/stream") == ("stream", "rtsp://cam.local/stream")
    assert parse_source("http://127.0.0.1:8080/video.mjpg")[0] == "stream"
    assert parse_source(str(tmp_path / "a.jpg")) == ("image", tmp_path / "a.jpg")
    kind, files = parse_source(str(tmp_path))
    assert kind == "files" and [p.name for p in files] == ["a.jpg", "b.png"]  # recursive, media only
    kind, files = parse_source(str(tmp_path / "**" / "*.png"))
    assert kind == "files" and [p.name for p in files] == ["b.png"]
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "missing.jpg"))
    with pytest.raises(SourceError, match="unknown file type"):
        parse_source(str(tmp_path / "notes.txt"))
    with pytest.raises(SourceError, match="webcam:N"):
        parse_source("webcam:front")
    assert parse_source(str(tmp_path / "*.gif")) == ("files", [])  # a glob matching nothing: the caller says so


# -- images and video files ------------------------------------------------------------------------------


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((5, 7, 3), (10, 20, 30), np.uint8))  # BGR on disk
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    source = ImageSource([tmp_path / "empty.jpg", good, tmp_path / "junk.jpg"])
    frames = list(source)
    assert len(frames) == 1 and frames[0].image[0, 0].tolist() == [30, 20, 10]  # RGB
    assert source.stats.frames == 1 and source.stats.skipped == 2 and len(source.stats.reasons) == 2


def test_video_file_frames_stride_and_fps(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 10, fps=10.0)
    source = VideoSource(path)
    frames = list(source)
    assert [f.index for f in frames] == list(range(10)) and frames[0].image.shape == (48, 64, 3)
    assert frames[3].timestamp == pytest.approx(0.3) and frames[0].kind == "video"
    assert len(source) == 10 and source.output_fps == pytest.approx(10.0)
    strided = VideoSource(path, stride=3)
    assert [f.index for f in strided] == [0, 3, 6, 9] and len(strided) == 4
    by_fps = VideoSource(path, target_fps=5)
    assert by_fps.stride == 2 and by_fps.output_fps == pytest.approx(5.0)
    missing = VideoSource(tmp_path / "missing.mp4")  # nothing is opened until the source is read
    assert len(missing) == 0
    with pytest.raises(SourceError, match="cannot open video"):
        list(missing)


def test_damaged_video_frames_are_skipped_and_counted():
    script = [frame(), frame(), None, frame(), np.zeros((0, 0, 3), np.uint8), frame()]
    source = VideoSource("fake.mp4", capture_factory=lambda _: FakeCapture(list(script)))
    frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3, 5]
    assert source.stats.skipped == 2 and source.stats.frames == 4


def test_overstated_length_is_not_counted_as_damage():
    source = VideoSource("fake.mp4", capture_factory=lambda _: FakeCapture([frame(), frame()], count=5))
    assert len(list(source)) == 2 and source.stats.skipped == 0


# -- live streams ----------------------------------------------------------------------------------------


def test_stream_reconnects_with_exponential_backoff():
    clock = FakeClock()
    plan = [
        FakeCapture([frame(1), frame(2), frame(3)]),
        FakeCapture([], opened=False),
        FakeCapture([], opened=False),
        FakeCapture([frame(4), frame(5)]),
    ]
    opened = []

    def factory(target):
        opened.append(target)
        return plan.pop(0)

    source = StreamSource(
        "rtsp://cam/1",
        backoff=0.5,
        max_backoff=8,
        jitter=0.0,
        give_up_after=30,
        max_frames=5,
        capture_factory=factory,
        clock=clock,
        sleep=clock.sleep,
    )
    values = [int(f.image[0, 0, 0]) for f in source]
    assert values == [1, 2, 3, 4, 5]
    assert clock.sleeps == [0.5, 1.0, 2.0]  # three tries after the drop, doubling
    assert source.stats.reconnects == 1 and opened == ["rtsp://cam/1"] * 4


def test_stream_that_stays_down_gives_up_with_a_clear_error():
    clock = FakeClock()

    def factory(target):
        return FakeCapture([frame(), frame()]) if not clock.sleeps else FakeCapture([], opened=False)

    source = StreamSource(
        "rtsp://cam/2",
        backoff=0.5,
        max_backoff=4,
        jitter=0.0,
        give_up_after=20,
        capture_factory=factory,
        clock=clock,
        sleep=clock.sleep,
    )
    got = []
    with pytest.raises(StreamLostError) as info:
        for f in source:
            got.append(f)
    assert len(got) == 2
    assert clock.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]  # capped at max_backoff
    assert sum(clock.sleeps) == pytest.approx(20.0)  # the last wait is cut to the give-up time
    message = str(info.value)
    assert "rtsp://cam/2" in message and "gave up after 20 s" in message and "attempt" in message


def test_a_camera_down_for_ten_minutes_is_never_given_up():
    """Issue 18: a camera (a stream with the default settings) that stays down for ten minutes keeps being
    retried at the capped pace and delivers again when it comes back (it used to give up after 30 s)."""
    clock = FakeClock()
    opened_at = []

    def factory(target):
        opened_at.append(clock.now)
        if clock.now == 0:
            return FakeCapture([frame(1), frame(2)])
        return FakeCapture([frame(3)] * 3) if clock.now >= 600 else FakeCapture([], opened=False)

    source = StreamSource("rtsp://cam/4", max_frames=5, capture_factory=factory, clock=clock, sleep=clock.sleep)
    assert [int(f.image[0, 0, 0]) for f in source] == [1, 2, 3, 3, 3]
    assert opened_at[-1] >= 600 and source.stats.reconnects == 1
    assert max(clock.sleeps) <= 8.0 * 1.1  # capped backoff (with its jitter): still trying every ~8 s
    assert len(opened_at) > 600 / 8.8


def test_a_long_outage_is_reported_failed_with_its_reason_and_next_attempt():
    """``failed`` is a status, not an end: it says why and when the next attempt is, and the source goes on
    trying; it comes back ``live``."""
    clock = FakeClock()
    reports = []

    def factory(target):
        if clock.now == 0:
            return FakeCapture([frame(1)])
        return FakeCapture([frame(2)]) if clock.now >= 100 else FakeCapture([], opened=False)

    source = StreamSource(
        "rtsp://cam/5", backoff=0.5, max_backoff=8, jitter=0.0, failed_after=30, max_frames=2,
        capture_factory=factory, clock=clock, sleep=clock.sleep, on_status=reports.append,
    )  # fmt: skip
    assert len(list(source)) == 2
    states = [r.state for r in reports]
    assert states[:3] == ["live", "lost", "reconnecting"] and states[-1] == "live"
    failed = [r for r in reports if r.state == "failed"]
    assert failed and states.index("failed") > states.index("reconnecting")
    first = failed[0]  # said when it happened (30 s), in the middle of a wait: 0.5+1+2+4+8+8 s, then 8 s
    assert first.reason == "no frame for 30 s: could not open it"
    assert first.retry_in == 1.5 and first.attempts == 6  # the next attempt, and how many failed so far
    assert failed[1].retry_in == 8.0 and failed[1].attempts == 7
    assert [r.attempts for r in failed] == sorted(r.attempts for r in failed)  # every attempt reported
    reconnecting = [r for r in reports if r.state == "reconnecting"]
    assert [r.retry_in for r in reconnecting][:4] == [0.5, 1.0, 2.0, 4.0]


def test_reconnection_waits_are_spread_so_cameras_do_not_retry_in_lockstep():
    """Streams that drop together (one switch, one recorder) reopen at spread times: each wait is the doubling
    schedule within +-10 %, and two streams' waits differ."""
    waits = []
    for _ in range(2):
        clock = FakeClock()
        source = StreamSource("rtsp://cam/3", backoff=0.5, max_backoff=4, give_up_after=30, clock=clock,
                              sleep=clock.sleep, capture_factory=lambda _: FakeCapture([], opened=False))  # fmt: skip
        with pytest.raises(StreamLostError):
            list(source)
        waits.append(clock.sleeps[:5])
    for got in waits:
        for wait, planned in zip(got, [0.5, 1.0, 2.0, 4.0, 4.0], strict=True):
            assert planned * 0.9 <= wait <= planned * 1.1
    assert waits[0] != waits[1]


def test_unreadable_stream_frames_are_skipped():
    clock = FakeClock()
    capture = FakeCapture([frame(), "garbage", frame(), frame()])
    source = StreamSource(0, max_frames=3, capture_factory=lambda _: capture, clock=clock, sleep=clock.sleep)
    assert len(list(source)) == 3 and source.stats.skipped == 1 and source.name == "webcam:0"


def test_stream_target_fps_drops_frames_by_arrival_time():
    clock = FakeClock()

    class Ticking(FakeCapture):
        def read(self):
            clock.now += 0.1  # frames arrive at 10 FPS
            return super().read()

    source = StreamSource(
        "http://x/s.mjpg",
        target_fps=2.5,
        capture_factory=lambda _: Ticking([frame()] * 12),
        clock=clock,
        sleep=clock.sleep,
        give_up_after=0.05,
        max_frames=3,
    )
    frames = list(source)
    assert [f.index for f in frames] == [0, 4, 8]


# -- a real MJPEG-over-HTTP stream on 127.0.0.1 that drops ------------------------------------------------


class _MJPEGHandler(http.server.BaseHTTPRequestHandler):
    frames = 40

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        image = np.zeros((48, 64, 3), np.uint8)
        try:
            for i in range(self.frames):
                image[:] = (i * 5) % 255
                _, jpeg = cv2.imencode(".jpg", image)
                data = jpeg.tobytes()
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                    + b"\r\n"
                )
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # then the connection closes: the "camera" is gone

    def log_message(self, *args):
        pass


def test_local_mjpeg_stream_drops_is_retried_then_reported():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MJPEGHandler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    attempts = []

    def factory(target):
        attempts.append(time.monotonic())
        if len(attempts) == 2:  # the first reconnection finds the server gone
            server.shutdown()
            server.server_close()
        return cv2.VideoCapture(target)

    source = StreamSource(url, backoff=0.1, max_backoff=0.4, give_up_after=1.5, capture_factory=factory)
    got = 0
    try:
        with pytest.raises(StreamLostError, match=r"gave up after 1\.5 s"):
            for _ in source:
                got += 1
    finally:
        server.server_close()
    if got == 0:
        pytest.skip("this OpenCV build cannot read MJPEG over HTTP")
    assert got >= 10  # frames arrived before the drop
    assert len(attempts) >= 3  # opened, then retried more than once before giving up


def test_a_server_that_accepts_and_never_sends_is_given_up_within_the_timeout():
    """--reconnect-timeout holds even when the server accepts the connection and then says nothing."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    source = StreamSource(f"http://127.0.0.1:{port}/video.mjpg", give_up_after=2.0, backoff=0.5, max_backoff=1.0)
    start = time.monotonic()
    try:
        with pytest.raises(StreamLostError, match="gave up after 2 s"):
            list(source)
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()
    assert accepted, "the server never saw a connection"
    assert time.monotonic() - start < 8  # the open/read timeouts bound every attempt (it was 31 s)


def test_webcam_without_a_device_fails_at_once(monkeypatch):
    from maskwatch.stream import sources as module

    monkeypatch.setattr(module.Path, "exists", lambda self: not str(self).startswith("/dev/video"))
    source = StreamSource(7, give_up_after=30)
    start = time.monotonic()
    with pytest.raises(StreamLostError, match="no camera /dev/video7"):
        list(source)
    assert time.monotonic() - start < 1
