"""Real network cameras for tests and benchmarks, served on 127.0.0.1 from local video files.

* :class:`MjpegCamera`: an HTTP MJPEG camera (``multipart/x-mixed-replace``, the format of most cheap IP
  cameras), in a thread of this process.
* :class:`RtspCamera`: an RTSP camera (RTP/JPEG), GStreamer's RTSP server in a process of its own
  (``tests/gst_rtsp_server.py`` run by Debian's ``/usr/bin/python3``; :func:`rtsp_unavailable` says why not).

Both play their file in a loop, in real time at the file's frame rate, whether anyone watches or not (a
camera, not video on demand). ``stop()`` takes the camera off the network: the port closes and open
connections drop; ``start()`` brings it back on the same port. OpenCV's FFmpeg backend reads both
(``cv2.VideoCapture(camera.url)``), so the stream engine reads them like any camera.

:func:`scene_video` makes the video files from the shared scene images (``../shared/data/scenes/images``):
each image letterboxed to 640x480 and held a few seconds, so people stand still long enough to be tracked.
Videos are made at run time into a temporary folder, never committed.

    video = scene_video(tmp / "door.avi", scene_images(n=6, seed=1), hold=4, fps=4)
    with MjpegCamera(video) as cam, RtspCamera(video) as cam2:
        cv2.VideoCapture(cam.url).read(); cv2.VideoCapture(cam2.url).read()
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEBIAN_PYTHON",
    "MjpegCamera",
    "RtspCamera",
    "free_port",
    "rtsp_unavailable",
    "scene_images",
    "scene_video",
]

DEBIAN_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).with_name("gst_rtsp_server.py")
RTSP_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-base"
)
BOUNDARY = "maskwatchframe"


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a camera that is stopped and restarted keeps its port,
    and ports the system hands out meanwhile (``bind(0)``, outgoing connections) never take it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def _wait_port(port: int, up: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return True
        time.sleep(0.05)
    return False


# -- video files ------------------------------------------------------------------------------------------


def scene_images(folder: str | Path | None = None, *, n: int = 8, seed: int = 0) -> list[Path]:
    """``n`` scene images picked at random (seeded) from ``folder`` (default: the shared scene images)."""
    if folder is None:
        from maskwatch.paths import shared_data_dir

        folder = shared_data_dir() / "scenes" / "images"
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return random.Random(seed).sample(paths, min(n, len(paths)))


def _letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    out[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return out


def scene_video(
    path: str | Path,
    images: Sequence[str | Path],
    *,
    hold: float = 4.0,
    fps: float = 4.0,
    size: tuple[int, int] = (640, 480),
    lead: float = 0.0,
    tail: float = 0.0,
) -> Path:
    """An MJPEG-in-AVI video (what :class:`RtspCamera` needs; any reader takes it): each image letterboxed to
    ``size`` and shown for ``hold`` seconds at ``fps``, after ``lead`` and before ``tail`` seconds of black."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    black = np.zeros((size[1], size[0], 3), np.uint8)
    try:
        for _ in range(round(lead * fps)):
            writer.write(black)
        for image_path in images:
            image = cv2.imread(str(image_path))
            if image is None:
                raise ValueError(f"cannot read {image_path}")
            frame = _letterbox(image, size)
            for _ in range(max(1, round(hold * fps))):
                writer.write(frame)
        for _ in range(round(tail * fps)):
            writer.write(black)
    finally:
        writer.release()
    return path


def _jpeg_runs(video: Path) -> list[tuple[bytes, int]]:
    """An MJPEG file's frames as they are stored (JPEG bytes; OpenCV's raw mode), consecutive equal frames
    as one (bytes, count) run."""
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.set(cv2.CAP_PROP_FORMAT, -1):
            raise ValueError(f"{video}: OpenCV cannot give this file's frames undecoded")
        runs: list[tuple[bytes, int]] = []
        while True:
            ok, packet = capture.read()
            if not ok:
                break
            data = packet.tobytes()
            if not data.startswith(b"\xff\xd8"):
                raise ValueError(f"{video}: not an MJPEG file (a frame is not a JPEG)")
            if runs and runs[-1][0] == data:
                runs[-1] = (data, runs[-1][1] + 1)
            else:
                runs.append((data, 1))
    finally:
        capture.release()
    if not runs:
        raise ValueError(f"{video}: no frames")
    return runs


# -- HTTP MJPEG -------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    camera: MjpegCamera


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        camera = self.server.camera
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        camera._clients.add(self.connection)
        try:
            seen = -1
            while not camera._stopping.is_set():
                jpeg, seen = camera._next_frame(seen)
                if jpeg is None:
                    continue
                part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n").encode()
                self.wfile.write(part + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            camera._clients.discard(self.connection)


class MjpegCamera:
    """An HTTP MJPEG camera at ``http://127.0.0.1:PORT/video.mjpg`` (any path serves the stream) playing
    ``video`` in a loop at its frame rate. ``port``: fixed, or a free one chosen once (kept across restarts).

    ``raw``: serve the file's own JPEG frames as they are (an MJPEG AVI, :func:`scene_video`'s), read once
    into memory (a run of identical frames kept once): no decoding and no re-encoding while it plays, so dozens
    of cameras cost the machine almost nothing (``benchmarks/bench_capacity.py``), and a reader decodes
    exactly the pixels a reader of the file decodes. Otherwise each frame is decoded and encoded again.
    ``offset`` (with ``raw``): seconds the file's first frame is shown before it plays the first time, so
    cameras started together are not in step.
    """

    def __init__(self, video: str | Path, port: int | None = None, *, raw: bool = False, offset: float = 0.0) -> None:
        self.video = Path(video)
        capture = cv2.VideoCapture(str(self.video))
        if not capture.isOpened():
            raise FileNotFoundError(f"cannot read video {self.video}")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        capture.release()
        if offset and not raw:
            raise ValueError("offset needs raw=True")
        self._runs = _jpeg_runs(self.video) if raw else None
        self.offset = offset
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._frame: bytes | None = None
        self._seq = 0
        self._cond = threading.Condition()
        self._clients: set[socket.socket] = set()
        self.frames_served = 0  # frames produced since the first start (every client sees the same ones)

    @property
    def running(self) -> bool:
        return self._server is not None

    def _next_frame(self, seen: int) -> tuple[bytes | None, int]:
        with self._cond:
            if self._seq == seen:
                self._cond.wait(0.5)
            if self._seq == seen:
                return None, seen
            return self._frame, self._seq

    def _publish(self, jpeg: bytes) -> None:
        with self._cond:
            self._frame, self._seq = jpeg, self._seq + 1
            self.frames_served += 1
            self._cond.notify_all()

    def _produce(self) -> None:
        """The camera's clock: one frame every 1/fps s, looping the file (reopened at its end)."""
        if self._runs is not None:
            self._play_raw(self._runs)
            return
        period = 1.0 / self.fps
        capture = cv2.VideoCapture(str(self.video))
        due = time.monotonic()
        try:
            while not self._stopping.is_set():
                ok, frame = capture.read()
                if not ok:
                    capture.release()
                    capture = cv2.VideoCapture(str(self.video))
                    ok, frame = capture.read()
                    if not ok:
                        raise RuntimeError(f"{self.video}: no frame")
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
                self._publish(jpeg.tobytes())
                due += period
                self._stopping.wait(max(0.0, due - time.monotonic()))
        finally:
            capture.release()

    def _play_raw(self, runs: list[tuple[bytes, int]]) -> None:
        period = 1.0 / self.fps
        due = time.monotonic()
        first = [(runs[0][0], round(self.offset * self.fps))] if self.offset > 0 else []
        while not self._stopping.is_set():
            for jpeg, count in first + runs:
                for _ in range(count):
                    self._publish(jpeg)
                    due += period
                    if self._stopping.wait(max(0.0, due - time.monotonic())):
                        return
            first = []

    def start(self, timeout: float = 10.0) -> MjpegCamera:
        if self._server is not None:
            return self
        self._stopping.clear()
        deadline = time.monotonic() + timeout
        while True:  # the port may still be held briefly by a previous run
            try:
                server = _Server(("127.0.0.1", self.port), _Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        server.camera = self
        self._server = server
        self._threads = [
            threading.Thread(target=self._produce, name=f"mjpeg-{self.port}-clock", daemon=True),
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"mjpeg-{self.port}", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Off the network: the listening port closes and every open connection is cut."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        for connection in list(self._clients):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5.0)
        self._threads = []

    def __enter__(self) -> MjpegCamera:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# -- RTSP ------------------------------------------------------------------------------------------------


def rtsp_unavailable() -> str | None:
    """Why :class:`RtspCamera` cannot run here (None when it can)."""
    if not os.path.exists(DEBIAN_PYTHON):
        return f"{DEBIAN_PYTHON} not found (GStreamer's RTSP server runs on Debian's Python)"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('avidemux', 'jpegdec', 'jpegenc', 'rtpjpegpay', 'appsrc', 'appsink')"
        " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
    )
    try:
        done = subprocess.run([DEBIAN_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"GStreamer probe failed: {exc}"
    if done.returncode != 0:
        return (
            f"GStreamer's RTSP server is not installed (apt-get install {RTSP_PACKAGES}): {done.stderr.strip()[-200:]}"
        )
    if done.stdout.strip():
        return f"GStreamer elements missing: {done.stdout.strip()} (apt-get install {RTSP_PACKAGES})"
    return None


class RtspCamera:
    """An RTSP camera at ``rtsp://127.0.0.1:PORT/cam`` playing ``video`` (an MJPEG AVI, see
    :func:`scene_video`) in a loop at its frame rate: GStreamer's RTSP server in its own process (``stop()``
    terminates it: the port closes). ``log``: where the server's output goes (default: discarded)."""

    def __init__(
        self, video: str | Path, port: int | None = None, *, mount: str = "/cam", log: str | Path | None = None
    ) -> None:
        self.video = Path(video)
        if not self.video.exists():
            raise FileNotFoundError(f"no video {self.video}")
        self.port = port or free_port()
        self.mount = mount
        self.url = f"rtsp://127.0.0.1:{self.port}{mount}"
        self.log = Path(log) if log else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def start(self, timeout: float = 30.0) -> RtspCamera:
        if self.running:
            return self
        if not _wait_port(self.port, up=False, timeout=5.0):
            raise RuntimeError(f"port {self.port} is taken")
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log, "ab")  # noqa: SIM115 - held by the child
        cmd = [
            DEBIAN_PYTHON,
            str(RTSP_SERVER),
            "--video",
            str(self.video),
            "--port",
            str(self.port),
            "--mount",
            self.mount,
        ]
        # a clean environment: the project's virtual environment must not leak into Debian's Python
        env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
        try:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the RTSP server exited with {self.process.returncode} (log: {self.log})")
            if _wait_port(self.port, up=True, timeout=0.2):
                return self
        self.stop()
        raise TimeoutError(f"the RTSP server did not listen on {self.port} within {timeout:g} s")

    def stop(self) -> None:
        """Off the network: the server process ends, its port closes, connections drop."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _wait_port(self.port, up=False, timeout=5.0)

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
