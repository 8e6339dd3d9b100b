"""Scene-pipeline benchmark: accuracy against VOC boxes, and the speed of `maskwatch detect` on images and video.

    python benchmarks/bench_pipeline.py --model models/maskwatch-mobilenet_v2.pt --json bench_pipeline.json
    python benchmarks/bench_pipeline.py --skip-eval --presets fast,balanced,accurate   # speed only

Three parts, each runnable alone, all in one process run so that speed comparisons share one machine state:

* **evaluate**: ``maskwatch evaluate-detection`` on ``--data`` (default ``../shared/data/scenes``) with each
  ``--eval-presets`` preset: face recall by size and precision at IoU 0.5 / 0.3, per-class AP@0.5, mAP,
  count MAE (see ``maskwatch.detection.evaluation.evaluate_voc``);
* **images**: ``maskwatch detect <images> --json ...`` (all faces classified, annotated nothing) per preset;
  images/s = images / processing seconds, from the command's own summary (model loading excluded);
* **video**: a 640x480 MP4 made from the scenes images (a slow pan over each image, ``--video-hold`` frames
  per image, so faces persist and move a little), then ``maskwatch detect VIDEO --preset fast --save DIR``
  with every frame processed (stride 1), tracking on, annotated video written: frames/s likewise.

Every command runs as a subprocess exactly as a user would type it; the JSON records the command lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MASKWATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scenes"


def cpu_model() -> str:
    """The CPU model, as `maskwatch bench` reports it."""
    from maskwatch.bench import machine_info

    return str(machine_info()["cpu"])


def maskwatch_cmd() -> list[str]:
    return [sys.executable, "-m", "maskwatch.cli"]


def run(cmd: list[str]) -> tuple[float, str]:
    print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"command failed with exit code {done.returncode}: {shlex.join(cmd)}")
    return wall, done.stdout + done.stderr


def last_summary(jsonl: Path) -> dict:
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    summary = records[-1]
    assert summary["type"] == "summary", summary
    sources = [r for r in records if r["type"] == "source"]
    return {"summary": summary, "sources": sources}


def make_video(images: list[Path], out: Path, hold: int, fps: float = 25.0, size=(640, 480)) -> dict:
    """A 640x480 video: each image shown for ``hold`` frames with a slow zoom-and-pan (faces persist)."""
    w, h = size
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise SystemExit("cannot write mp4v video with this OpenCV build")
    frames = 0
    for path in images:
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        ih, iw = bgr.shape[:2]
        # the largest 4:3 window, shrinking from 100 % to 85 % of it while drifting right
        base_w = min(iw, ih * w / h)
        for k in range(hold):
            t = k / max(1, hold - 1)
            cw = base_w * (1.0 - 0.15 * t)
            ch = cw * h / w
            x0 = (iw - cw) * (0.2 + 0.6 * t)
            y0 = (ih - ch) / 2
            m = np.float32([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch]])
            frame = cv2.warpAffine(bgr, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            writer.write(frame)
            frames += 1
    writer.release()
    return {"path": str(out), "frames": frames, "fps": fps, "width": w, "height": h, "images": len(images),
            "hold": hold}  # fmt: skip


def breakdown(video: Path, model: Path | None, backend: str | None, frames: int = 40, spin: bool = False) -> dict:
    """Where a video frame's time goes (in-process, same machine state): face detection per frame,
    classification per face (all of a frame's faces in one batch), tracking + drawing + JPEG encoding per frame.
    ``spin``: let the ONNX Runtime sessions' idle threads busy-wait (off in ``maskwatch detect``)."""
    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.tracking import FaceTracker

    detector = MaskDetector.load(model, backend=backend or None, preset="fast", spin=spin)
    tracker = FaceTracker(detector.classes, frame_rate=25)
    capture = cv2.VideoCapture(str(video))
    t_detect = t_classify = t_rest = 0.0
    n_faces = n = 0
    while n < frames:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        found = detector.find_faces(rgb)
        boxes = found.boxes[found.scores >= detector.score_threshold]
        t1 = time.perf_counter()
        detector.classify(detector.crops(rgb, boxes))
        t2 = time.perf_counter()
        untracked = detector.detect(rgb)  # the same work again, untimed, to get a result to track and draw
        t3 = time.perf_counter()
        result = tracker.update(untracked)
        cv2.imencode(".jpg", cv2.cvtColor(draw_result(rgb, result), cv2.COLOR_RGB2BGR))
        t4 = time.perf_counter()
        t_detect += t1 - t0
        t_classify += t2 - t1
        t_rest += t4 - t3
        n_faces += len(boxes)
        n += 1
    capture.release()
    return {"frames": n, "faces": n_faces, "detector_ms_per_frame": round(1000 * t_detect / max(n, 1), 1),
            "classifier_ms_per_face": round(1000 * t_classify / max(n_faces, 1), 1),
            "classifier_ms_per_frame": round(1000 * t_classify / max(n, 1), 1),
            "track_draw_encode_ms_per_frame": round(1000 * t_rest / max(n, 1), 1),
            "classifier_backend": getattr(detector.classifier, "backend", "?"), "spin": spin}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC folder with images/ and annotations/")
    p.add_argument("--model", type=Path, default=None, help="classifier (default: the bundled model)")
    p.add_argument("--backend", default=None, help="classifier backend (default: the runtime's choice)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--presets", default="accurate,fast", help="presets timed on the images")
    p.add_argument("--eval-presets", default="accurate", help="presets evaluated against the boxes")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--video-images", type=int, default=20, help="scenes images the video is made from")
    p.add_argument("--video-hold", type=int, default=15, help="frames per image in the video")
    p.add_argument(
        "--video-backends",
        default="default",
        help="classifier backends timed on the video, e.g. "
        "default,onnx-int8 (default: --backend, or the runtime's choice)",
    )
    p.add_argument(
        "--spin-ab",
        action="store_true",
        help="also break a video frame down with the ONNX Runtime "
        "sessions' threads spinning (ONNX Runtime's default) and not (maskwatch's), in turn",
    )
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-images", action="store_true")
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--keep", type=Path, default=None, help="keep the outputs (video, JSON Lines) in this folder")
    args = p.parse_args(argv)

    images = sorted((args.data / "images").glob("*.jpg"))
    if args.limit:
        images = images[: args.limit]
    if not images:
        print(f"no images under {args.data / 'images'}", file=sys.stderr)
        return 2
    common: list[str] = []
    if args.model:
        common += ["--model", str(args.model)]
    if args.backend:
        common += ["--backend", args.backend]

    work = Path(tempfile.mkdtemp(prefix="mw-bench-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "data": str(args.data),
        "model": str(args.model) if args.model else "bundled",
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "load_average_at_start": os.getloadavg(),
        },
        "commands": [],
    }

    if not args.skip_eval:
        result["evaluate"] = {}
        for preset in [s for s in args.eval_presets.split(",") if s]:
            out = work / f"eval-{preset}.json"
            cmd = [
                *maskwatch_cmd(),
                *("evaluate-detection", "--data", str(args.data), "--json", str(out)),
                *("--preset", preset, "--no-progress"),
                *common,
            ]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            wall, _ = run(cmd)
            metrics = json.loads(out.read_text())
            metrics.pop("settings", None)
            metrics["wall_seconds"] = round(wall, 1)
            result["evaluate"][preset] = metrics
            result["commands"].append(shlex.join(cmd))
            r = metrics["recall"]
            recall = " ".join(f"{b} {r[b]:.3f}" for b in ("<20", "20-32", "32-64", ">=64", ">=20"))
            ap = json.dumps({k: round(v, 3) for k, v in metrics["ap50"].items()})
            print(
                f"[eval {preset}] recall@0.5 {recall}"
                f" | recall@0.3 >=20 {metrics['recall_iou30']['>=20']:.3f} | precision {metrics['precision']:.3f}"
                f" | AP {ap} mAP {metrics['map50']:.3f}"
                f" (argmax {metrics['map50_argmax']:.3f}) | count MAE {metrics['count_mae']:.2f}",
                file=sys.stderr,
            )

    if not args.skip_images:
        listing = work / "images.txt"
        folder = work / "images"
        folder.mkdir(exist_ok=True)
        for path in images:  # a folder of links, so `detect` gets exactly these images
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
        listing.write_text("\n".join(map(str, images)))
        result["images"] = {}
        for preset in [s for s in args.presets.split(",") if s]:
            jsonl = work / f"detect-images-{preset}.jsonl"
            cmd = [
                *maskwatch_cmd(),
                *("detect", str(folder), "--preset", preset, "--json", str(jsonl), "--no-progress"),
                *common,
            ]
            wall, _ = run(cmd)
            s = last_summary(jsonl)["summary"]
            result["images"][preset] = {"images": s["n_frames"], "faces": s["n_faces"], "seconds": s["seconds"],
                                        "images_per_second": s["frames_per_second"], "wall_seconds": round(wall, 1),
                                        "counts": s["counts"], "compliance": s["compliance"]}  # fmt: skip
            result["commands"].append(shlex.join(cmd))
            print(f"[images {preset}] {s['n_frames']} images, {s['n_faces']} faces classified: "
                  f"{s['frames_per_second']:.2f} images/s", file=sys.stderr)  # fmt: skip

    if not args.skip_video:
        video = work / "scenes-640x480.mp4"
        info = make_video(images[: args.video_images], video, args.video_hold)
        result["video"] = {**{k: v for k, v in info.items() if k != "path"}, "runs": {}}
        for backend in [b for b in args.video_backends.split(",") if b]:
            tag = backend if backend != "default" else (args.backend or "default")
            extra = common if backend == "default" else [a for a in common if a not in ("--backend", args.backend)]
            if backend != "default":
                extra = [*extra, "--backend", backend]
            jsonl, out = work / f"detect-video-{tag}.jsonl", work / f"video-out-{tag}"
            cmd = [
                *maskwatch_cmd(),
                *("detect", str(video), "--preset", "fast", "--save", str(out), "--json", str(jsonl)),
                "--no-progress",
                *extra,
            ]
            wall, _ = run(cmd)
            s = last_summary(jsonl)["summary"]
            run_backend = args.backend if backend == "default" else backend
            written = cv2.VideoCapture(str(out / video.name))
            n_out = int(written.get(cv2.CAP_PROP_FRAME_COUNT))
            written.release()
            run_info = {"frames_processed": s["n_frames"], "frames_written": n_out, "faces": s["n_faces"],
                        "seconds": s["seconds"], "frames_per_second": s["frames_per_second"],
                        "wall_seconds": round(wall, 1), "people": s["people"],
                        "breakdown_ms": breakdown(video, args.model, run_backend)}  # fmt: skip
            if args.spin_ab:  # same process, one after the other: spinning on, off, on, off
                ab = [breakdown(video, args.model, args.backend if backend == "default" else backend, spin=spin)
                      for spin in (True, False, True, False)]  # fmt: skip
                run_info["spin_ab_ms"] = ab
                print(
                    f"[video {tag}] spin on/off/on/off, detector + classifier ms per frame: "
                    + ", ".join(f"{b['detector_ms_per_frame'] + b['classifier_ms_per_frame']:.1f}" for b in ab),
                    file=sys.stderr,
                )
            result["video"]["runs"][tag] = run_info
            result["commands"].append(shlex.join(cmd))
            print(f"[video {tag}] {s['n_frames']} frames of 640x480 ({n_out} written), every frame processed, "
                  f"tracking on: {s['frames_per_second']:.2f} frames/s; breakdown {run_info['breakdown_ms']}",
                  file=sys.stderr)  # fmt: skip

    result["machine"]["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
