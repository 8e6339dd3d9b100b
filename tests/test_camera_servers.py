"""The real camera servers of the tests and the chaos soak (``tests/camera_servers.py``): OpenCV's FFmpeg backend
reads frames from the HTTP MJPEG and the RTSP camera, in real time, in a loop, and sees a stop and a restart."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from camera_servers import MjpegCamera, RtspCamera, rtsp_unavailable, scene_images, scene_video
from conftest import shared_or_skip

FPS, HOLD = 4.0, 1.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    images = scene_images(shared_or_skip("scenes", "images"), n=3, seed=1)
    return scene_video(tmp_path_factory.mktemp("cams") / "scene.avi", images, hold=HOLD, fps=FPS)


def _open(url: str, timeout_ms: int = 10000):
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])  # fmt: skip


def _read(capture, n: int) -> list[np.ndarray]:
    frames = []
    for _ in range(n):
        ok, frame = capture.read()
        assert ok, "the camera stopped delivering frames"
        frames.append(frame)
    return frames


def _skip_buffered(capture) -> None:
    """Read what queued up while the stream was opened (FFmpeg probes RTSP for about 5 s), until a frame has
    to be waited for."""
    for _ in range(100):
        start = time.monotonic()
        assert capture.read()[0]
        if time.monotonic() - start > 0.5 / FPS:
            return


def test_scene_video_holds_each_image(video):
    capture = cv2.VideoCapture(str(video))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    frames = _read(capture, int(3 * HOLD * FPS))
    capture.release()
    assert all(f.shape == (480, 640, 3) for f in frames)
    per_image = int(HOLD * FPS)
    first, second = frames[:per_image], frames[per_image : 2 * per_image]
    assert np.abs(first[0].astype(int) - first[-1].astype(int)).mean() < 3  # the same image, held
    assert np.abs(first[0].astype(int) - second[0].astype(int)).mean() > 10  # then the next one


def _check_camera(camera, video) -> None:
    """Frames arrive in real time and loop the file; a stop cuts the reader and refuses new ones; a restart
    on the same port serves again."""
    reference = _read(cv2.VideoCapture(str(video)), int(3 * HOLD * FPS))[:: int(HOLD * FPS)]
    camera.start()
    try:
        capture = _open(camera.url)
        assert capture.isOpened()
        _skip_buffered(capture)
        start = time.monotonic()
        frames = _read(capture, 3 * int(HOLD * FPS) + 1)
        elapsed = time.monotonic() - start
        assert elapsed > 0.5 * len(frames) / FPS, f"{len(frames)} frames in {elapsed:.2f} s: not real time"
        assert frames[0].shape == (480, 640, 3)
        # every frame is one of the file's images (JPEG round trips aside), and more than one shows up
        matches = {int(np.argmin([np.abs(f.astype(int) - r.astype(int)).mean() for r in reference])) for f in frames}
        errors = [min(np.abs(f.astype(int) - r.astype(int)).mean() for r in reference) for f in frames]
        assert max(errors) < 6 and len(matches) >= 2
        camera.stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and capture.read()[0]:
            pass
        assert time.monotonic() < deadline, "the reader still gets frames after the camera stopped"
        capture.release()
        assert not _open(camera.url, 2000).isOpened()
        camera.start()
        again = _open(camera.url)
        assert again.isOpened()
        _read(again, 3)
        again.release()
    finally:
        camera.stop()


def test_http_mjpeg_camera(video):
    _check_camera(MjpegCamera(video), video)


def test_rtsp_camera(video):
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    _check_camera(RtspCamera(video), video)
