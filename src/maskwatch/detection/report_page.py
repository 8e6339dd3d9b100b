"""The small self-contained HTML page of a scene-detection evaluation.

The numbers come from :func:`maskwatch.detection.evaluation.evaluate_voc`.

Standard library only: the numbers are already computed, this only lays them out.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_html_report"]


def write_html_report(metrics: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """A small self-contained HTML page with the numbers of
    :func:`~maskwatch.detection.evaluation.evaluate_voc`."""

    def f(value: Any) -> str:
        return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))

    hidden = metrics.get("privacy_coverage") or {}
    hidden_video = metrics.get("privacy_coverage_video") or {}
    rows = "".join(
        f"<tr><td>{html.escape(b)}</td><td>{metrics['n_faces_by_bucket'][b]}</td><td>{f(metrics['recall'][b])}</td>"
        f"<td>{f(metrics['recall_iou30'][b])}</td><td>{f(hidden.get(b))}</td>"
        + (f"<td>{f(hidden_video.get(b))}</td>" if hidden_video else "")
        + "</tr>"
        for b in metrics["recall"]
    )
    hidden_head = "<th>hidden by the blur</th>" + ("<th>hidden (videos)</th>" if hidden_video else "")
    ap_rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{f(v)}</td><td>{f(metrics['ap50_argmax'].get(c))}</td></tr>"
        for c, v in metrics["ap50"].items()
    )
    images = metrics.get("images") or {}
    chosen = (
        f" (split {html.escape(str(images['split']))}: {html.escape(str(images['list']))})"
        if images.get("split")
        else ""
    )
    all_classes = metrics.get("map_all_classes") or []
    all_row = (
        f"<tr><th>mAP (all {len(all_classes)}: {html.escape(', '.join(all_classes))})</th>"
        f"<th>{f(metrics.get('map50_all'))}</th><th></th></tr>"
        if len(all_classes) > len(metrics["map_classes"])
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maskwatch detection evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}
table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .7rem;text-align:right}}td:first-child,th:first-child{{text-align:left}}
pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>Detection evaluation</h1>
<p>{html.escape(str(metrics["data"]))}{chosen}: {metrics["n_images"]} images, {metrics["n_faces"]} annotated faces.</p>
<h2>Face finding (operating point: detector score ≥ {f(metrics["operating_point"]["score_threshold"])})</h2>
<table><tr><th>face size (longest side, px)</th><th>faces</th>
<th>recall IoU≥0.5</th><th>recall IoU≥0.3</th>{hidden_head}</tr>{rows}</table>
<p>Hidden by the blur: the share of annotated faces at least 90 % covered by the blur (every candidate,
grown to the head; docs/privacy.md); blurred share of the image {f(metrics.get("blurred_area_share"))}.</p>
<p>precision IoU≥0.5 {f(metrics["precision"])}, IoU≥0.3 {f(metrics["precision_iou30"])};
per-image face count MAE {f(metrics["count_mae"])}.</p>
<h2>Average precision at IoU 0.5</h2>
<table><tr><th>class</th><th>AP@0.5</th><th>AP@0.5 (argmax label only)</th></tr>{ap_rows}
<tr><th>mAP ({html.escape(", ".join(metrics["map_classes"]))})</th>
<th>{f(metrics["map50"])}</th><th>{f(metrics["map50_argmax"])}</th></tr>{all_row}</table>
<p>Class-agnostic face AP@0.5: {f(metrics["ap50_face"])}.</p>
<p><small>{html.escape(metrics["ap_method"])}. Ranking: {html.escape(metrics["ranking"])}.</small></p>
<h2>Settings</h2><pre>{html.escape(json.dumps(metrics["settings"], indent=2))}</pre>
</body></html>
"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
