"""``POST /infer``'s gate: still images analysed on a small thread pool (``limits.infer_concurrency`` at once,
by default physical cores // ``model.threads``: each analysis already runs on ``model.threads`` cores, and
more at once takes the CPU from the cameras), at most ``limits.infer_queue`` more waiting (then 503 at
once), each within ``limits.request_timeout_s`` (then 504)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from maskwatch.service.errors import ApiError
from maskwatch.service.media import render_jpeg

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.service.metrics import Metrics

__all__ = ["FaceOut", "InferResult", "InferTimings", "InferenceGate"]


class FaceOut(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1 in image pixels")
    score: float = Field(description="detector score, 0..1")
    label: str = Field(description="most likely class")
    probability: float
    probabilities: dict[str, float]


class InferTimings(BaseModel):
    queue_ms: float
    decode_ms: float
    detect_ms: float
    total_ms: float


class InferResult(BaseModel):
    width: int
    height: int
    n_faces: int
    faces: list[FaceOut]
    counts: dict[str, int] = Field(description="faces per class")
    compliance: float | None = Field(description="share of faces wearing a mask correctly; None without faces")
    image: str | None = Field(None, description="with ?annotated=true: the annotated JPEG (faces blurred), a data URL")
    timings: InferTimings


class InferenceGate:
    """Runs :meth:`analyse` on a pool of ``concurrency`` threads, refusing work beyond ``queue`` waiting."""

    def __init__(
        self,
        detector: MaskDetector,
        metrics: Metrics,
        *,
        concurrency: int,
        queue: int,
        max_pixels: int,
        timeout_s: float,
    ) -> None:
        self.detector = detector
        self.metrics = metrics
        self.queue = queue
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="maskwatch-infer")
        self._lock = threading.Lock()
        self.waiting = 0

    def resize(self, concurrency: int) -> None:
        """Analyse ``concurrency`` images at once from now on (benchmarks compare settings in one run)."""
        old = self._pool
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="maskwatch-infer")
        self.concurrency = concurrency
        old.shutdown(wait=True)

    async def run(self, data: bytes, *, annotated: bool) -> InferResult:
        """Analyse one encoded image; 503 when too many wait, 504 past the timeout."""
        with self._lock:
            if self.waiting >= self.concurrency + self.queue:
                raise ApiError(503, "busy", "too many images waiting; retry shortly", headers={"Retry-After": "1"})
            self.waiting += 1
        try:
            future = self._pool.submit(self.analyse, data, annotated, time.perf_counter())
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
            except TimeoutError as exc:
                future.cancel()
                raise ApiError(504, "timeout", f"analysis took longer than {self.timeout_s:g} s") from exc
        finally:
            with self._lock:
                self.waiting -= 1

    def analyse(self, data: bytes, annotated: bool, queued: float) -> InferResult:
        """Decode, detect, and (``annotated``) render; ``queued``: when the request was accepted
        (``time.perf_counter``)."""
        from maskwatch.data.images import BadImageError, TooManyPixelsError, decode_rgb

        began = time.perf_counter()
        try:
            rgb = decode_rgb(data, max_pixels=self.max_pixels)
        except TooManyPixelsError as exc:  # the service's own setting, not the CLI's variable
            raise ApiError(
                413,
                "too_large",
                f"the image has too many pixels ({exc.width}x{exc.height}): limits.upload_pixels is {exc.limit}",
            ) from exc
        except BadImageError as exc:
            raise ApiError(422, "bad_image", exc.reason) from exc
        decoded = time.perf_counter()
        result = self.detector.detect(rgb)
        detected = time.perf_counter()
        image = None
        if annotated:
            jpeg = render_jpeg(rgb, result, blur=True, max_side=1280)
            image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        done = time.perf_counter()
        self.metrics.infer.observe(detected - decoded)
        return InferResult(
            width=result.width,
            height=result.height,
            n_faces=len(result.faces),
            faces=[
                FaceOut(
                    box=[round(v, 1) for v in f.box],
                    score=round(f.score, 4),
                    label=f.label,
                    probability=0.0 if f.probability is None else round(f.probability, 4),  # kept: classified
                    probabilities={k: round(v, 4) for k, v in f.probabilities.items()},
                )
                for f in result.faces
            ],
            counts=result.counts,
            compliance=None if result.compliance is None else round(result.compliance, 4),
            image=image,
            timings=InferTimings(
                queue_ms=round((began - queued) * 1000, 1),
                decode_ms=round((decoded - began) * 1000, 1),
                detect_ms=round((detected - decoded) * 1000, 1),
                total_ms=round((done - queued) * 1000, 1),
            ),
        )

    def stop(self) -> None:
        """Drop what waits; an analysis under way finishes on its own thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
