"""Face-detector benchmark on the shared VOC scenes: recall by face size, precision, latency.

    python benchmarks/bench_detector.py --json bench_detector.json
    python benchmarks/bench_detector.py --threshold 0.3 --sweep 0.4,0.5 --max-side 800

Latency is the time of ``CenterFaceDetector.detect`` (resize, network, decoding, NMS) per image, after a
short warm-up, excluding JPEG decoding. Recall and precision count every annotated box as a face (all
classes) and match greedily by score at IoU >= 0.5 and >= 0.3. Precision is a lower bound: the scenes
leave many background faces unannotated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from maskwatch.data.voc import read_voc
from maskwatch.detection.centerface import VOC_BOX_ADJUST, CenterFaceDetector
from maskwatch.detection.evaluation import SIZE_BUCKETS, evaluate_detection, voc_target

DEFAULT_DATA = (
    Path(os.environ.get("MASKWATCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    / "scenes"
)


def cpu_model() -> str:
    """The CPU model, as `maskwatch bench` reports it."""
    from maskwatch.bench import machine_info

    return str(machine_info()["cpu"])


def machine_info(threads: int) -> dict[str, object]:
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC folder with images/ and annotations/")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--threshold", type=float, default=0.4, help="detector score threshold")
    p.add_argument("--sweep", default="", help="extra thresholds (>= --threshold) to report, e.g. 0.5,0.6")
    p.add_argument("--max-side", type=int, default=640, help="network input longest side (0: native size)")
    p.add_argument("--no-upscale", action="store_true", help="do not scale small images up to --max-side")
    p.add_argument("--raw-boxes", action="store_true", help="CenterFace's own box framing (no VOC adjustment)")
    p.add_argument("--nms-iou", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)

    xmls = sorted((args.data / "annotations").glob("*.xml"))
    if args.limit:
        xmls = xmls[: args.limit]
    if not xmls:
        print(f"no annotations under {args.data / 'annotations'}", file=sys.stderr)
        return 2
    detector = CenterFaceDetector(
        score_threshold=args.threshold,
        nms_iou=args.nms_iou,
        max_side=args.max_side or None,
        upscale=not args.no_upscale,
        box_adjust=None if args.raw_boxes else VOC_BOX_ADJUST,
        threads=args.threads,
    )
    images, targets = [], []
    for xml in xmls:
        bgr = cv2.imread(str(args.data / "images" / f"{xml.stem}.jpg"))
        if bgr is None:
            print(f"skipping {xml.stem}: image missing or unreadable", file=sys.stderr)
            continue
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        targets.append(voc_target(read_voc(xml)))

    for image in images[: args.warmup]:
        detector.detect(image)
    detections, times_ms = [], []
    for i, image in enumerate(images, 1):
        t0 = time.perf_counter()
        faces = detector.detect(image)
        times_ms.append(1000 * (time.perf_counter() - t0))
        detections.append(faces)
        if i % 100 == 0 or i == len(images):
            print(f"{i}/{len(images)} images, {statistics.fmean(times_ms):.1f} ms/image", file=sys.stderr)

    def at(threshold: float) -> dict[str, object]:
        preds = []
        for faces in detections:
            kept = [f for f in faces if f.score >= threshold]
            preds.append({"boxes": np.array([f.box for f in kept]).reshape(-1, 4),
                          "scores": np.array([f.score for f in kept])})  # fmt: skip
        r = evaluate_detection(preds, targets, classes=[])
        keys = (
            "recall", "recall_iou30", "precision", "precision_iou30",
            "ap50_face", "count_mae", "n_predictions", "n_faces_by_bucket",
        )  # fmt: skip
        return {"score_threshold": threshold, **{k: r[k] for k in keys}}

    thresholds = [args.threshold, *sorted({float(t) for t in args.sweep.split(",") if t} - {args.threshold})]
    if any(t < args.threshold for t in thresholds):
        p.error("--sweep thresholds must be >= --threshold (they filter one run's detections)")
    sizes = [im.shape[:2] for im in images]
    metrics = at(args.threshold)
    result = {
        "data": str(args.data),
        "n_images": len(images),
        "n_faces": int(sum(len(t["boxes"]) for t in targets)),
        "n_faces_by_bucket": metrics.pop("n_faces_by_bucket"),
        "image_size_median_hw": [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))],
        "detector": repr(detector),
        "metrics": metrics,
        "sweep": [{k: v for k, v in at(t).items() if k != "n_faces_by_bucket"} for t in thresholds[1:]],
        "latency_ms": {
            "mean": statistics.fmean(times_ms),
            "p50": percentile(times_ms, 50),
            "p95": percentile(times_ms, 95),
            "max": max(times_ms),
        },
        "machine": machine_info(args.threads),
        "note": "precision is a lower bound (unannotated background faces count as false positives); "
        "ap50_face is truncated at the score threshold",
    }
    for row in [result["metrics"], *result["sweep"]]:
        rec, rec30 = row["recall"], row["recall_iou30"]
        print(
            f"thr {row['score_threshold']:.2f}  recall@0.5 "
            + " ".join(f"{b} {rec[b]:.3f}" for b in SIZE_BUCKETS)
            + f" | recall@0.3 >=20 {rec30['>=20']:.3f} all {rec30['all']:.3f}"
            f" | precision@0.5 {row['precision']:.3f} @0.3 {row['precision_iou30']:.3f}"
            f" | count MAE {row['count_mae']:.2f}"
        )
    lat = result["latency_ms"]
    print(
        f"latency ms/image: mean {lat['mean']:.1f}  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}"
        f"  ({result['machine']['cpu']}, {args.threads} threads)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
