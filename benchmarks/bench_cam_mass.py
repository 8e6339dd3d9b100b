"""Grad-CAM lower-face share of the bundled model on all scene crops >= 32 px.

.venv/bin/python benchmarks/bench_cam_mass.py   # writes benchmarks/results/cam_mass_scenes.json
"""

import json
import time

from maskwatch.bundled import default_model_path
from maskwatch.evaluate import evaluate_dataset
from maskwatch.report.build import build_report

t = time.perf_counter()
ev = evaluate_dataset(default_model_path(), "../shared/data/scenes", crops=True, min_face=32)
res = build_report(ev, "/tmp/maskwatch-report-scenes.html", model_path=default_model_path(), cam_samples=100000)
print(json.dumps(res.mass_summary, indent=1, default=float))
print("seconds", time.perf_counter() - t, "size", res.size_bytes)
with open("benchmarks/results/cam_mass_scenes.json", "w") as fh:
    summary = {"mass_summary": res.mass_summary, "seconds": time.perf_counter() - t, "size_bytes": res.size_bytes}
    json.dump(summary, fh, indent=1, default=float)
