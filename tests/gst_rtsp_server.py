"""An RTSP camera for tests and benchmarks: serves an MJPEG-in-AVI video file, looped, in real time, as a
live stream (``rtsp://127.0.0.1:PORT/MOUNT``, RTP/JPEG), like a network camera that is always on.

Run by Debian's ``/usr/bin/python3`` (GStreamer's RTSP server through GObject introspection: ``apt-get install
python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-base``),
not by the project's virtual environment; :class:`camera_servers.RtspCamera` starts and stops it.

The file's JPEG frames are read once with GStreamer (``filesrc ! avidemux ! appsink``), then pushed into a live
``appsrc`` at the file's frame rate, round and round, for every client at once (one shared pipeline: a
camera, not a video-on-demand server). Stopping the process closes the port.

    /usr/bin/python3 tests/gst_rtsp_server.py --video cam.avi --port 8554 --mount /cam
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def read_frames(path: str) -> tuple[list[bytes], int, int]:
    """Every JPEG frame of an MJPEG AVI file, and its frame rate as a fraction."""
    pipeline = Gst.parse_launch(f'filesrc location="{path}" ! avidemux ! image/jpeg ! appsink name=out sync=false')
    sink = pipeline.get_by_name("out")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    num, den = 0, 1
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        if not frames:
            ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
            if not ok or num <= 0:
                num, den = 10, 1
        buffer = sample.get_buffer()
        ok, info = buffer.map(Gst.MapFlags.READ)
        if ok:
            frames.append(bytes(info.data))
            buffer.unmap(info)
    pipeline.set_state(Gst.State.NULL)
    if not frames:
        raise SystemExit(f"error: no JPEG frame in {path} (expected an MJPEG AVI file)")
    return frames, num, den


class LoopingCamera(GstRtspServer.RTSPMediaFactory):
    """One shared live pipeline: ``appsrc`` fed the file's frames in a loop at the file's frame rate."""

    def __init__(self, frames: list[bytes], num: int, den: int) -> None:
        super().__init__()
        self.frames, self.num, self.den = frames, num, den
        self.index = 0  # the camera's own frame counter: a client joining later sees the current frame
        self.set_shared(True)
        # RTP over the RTSP connection (TCP): FFmpeg tries UDP first and, on 127.0.0.1 behind no NAT, waits
        # 5 s for UDP packets before falling back; refusing UDP makes it take TCP at once
        self.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true "
            f"caps=image/jpeg,framerate={num}/{den} ! jpegdec ! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        source = media.get_element().get_child_by_name("src")
        period_ms = max(1, round(1000 * self.den / self.num))

        def push() -> bool:
            frame = self.frames[self.index % len(self.frames)]
            self.index += 1
            buffer = Gst.Buffer.new_wrapped(frame)
            buffer.duration = Gst.util_uint64_scale(Gst.SECOND, self.den, self.num)
            return source.emit("push-buffer", buffer) == Gst.FlowReturn.OK

        GLib.timeout_add(period_ms, push)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="an MJPEG-in-AVI file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    Gst.init(None)
    frames, num, den = read_frames(args.video)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, LoopingCamera(frames, num, den))
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"rtsp://{args.host}:{args.port}{args.mount} ({len(frames)} frames at {num}/{den} fps)", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
