"""Build the self-contained HTML insight report of one model on one dataset split.

>>> from maskwatch.evaluate import evaluate_dataset
>>> evaluation = evaluate_dataset("runs/x/model.pt", "../shared/data/faces", split="test")
>>> build_report(evaluation, "report.html").size_bytes      # doctest: +SKIP

The report reads top-down: run summary (data, config, model card, versions), training curves, metrics
(table, confusion, ROC, precision-recall, reliability, best-F1 threshold), Grad-CAM galleries per class,
the network's insides (feature maps, first-layer filters, trained weights) and the explanation-quality
figure (how much CAM mass falls on the lower face). Every image is embedded as a data URI and the page
has no scripts, external styles or fonts, so it opens from disk without a network.

Cost is bounded: Grad-CAM runs only for gallery tiles (``per_gallery`` per gallery and class) and for a
seeded sample of ``cam_samples`` images per class for the mass figure, batched, in one hook session.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch import plotting
from maskwatch.core.contract import CROP_MARGIN, DEFAULT_CROP_MARGIN, model_fields
from maskwatch.core.digests import file_sha256
from maskwatch.report import analysis, plots

log = logging.getLogger("maskwatch.report")

TEMPLATE = "report.html.j2"
SECTIONS = (
    ("summary", "Run summary"),
    ("training", "Training curves"),
    ("metrics", "Metrics"),
    ("galleries", "Grad-CAM galleries"),
    ("internals", "Inside the network"),
    ("explanation-quality", "Explanation quality"),
)
TILE_SIZE = 112
MODEL_CARD_NAME = "MODEL_CARD.md"


@dataclass
class ReportResult:
    path: Path
    size_bytes: int
    seconds: float
    mass_summary: dict[str, dict]  # per true class, see explain.mass.summarize_by_class
    timings: dict[str, float] = field(default_factory=dict)


# -- inputs found beside a model ----------------------------------------------------------------------


def find_model_card(model_path: Path, explicit: str | Path | None = None) -> Path | None:
    """``explicit`` if given (must exist), else ``MODEL_CARD.md`` beside the model or in its run folder."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"model card {path} does not exist")
        return path
    for candidate in (model_path.parent / MODEL_CARD_NAME, model_path.with_suffix(".md")):
        if candidate.is_file():
            return candidate
    return None


def read_history(run_dir: Path, checkpoint: dict[str, Any]) -> tuple[list[dict], str]:
    """Epoch rows from ``RUN_DIR/history.csv``, else from ``checkpoint["metrics"]["history"]`` (a list of
    dicts with the same columns), and where they came from."""
    path = run_dir / "history.csv"
    if path.is_file():
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle)), str(path)
    stored = (checkpoint.get("metrics") or {}).get("history")
    if isinstance(stored, list) and stored:
        return list(stored), "the checkpoint's metrics.history"
    return [], str(path)


#: Human names of the build steps timed in ``ReportResult.timings`` (shown in the report's footer).
TIMING_LABELS = {
    "summary_s": "run summary",
    "metrics_s": "metrics and curves",
    "load_s": "loading images",
    "cam_s": "Grad-CAM maps",
    "galleries_s": "galleries",
    "internals_s": "model internals",
    "quality_s": "data quality",
}


def timing_lines(timings: dict[str, float]) -> list[str]:
    """``["metrics and curves 1.2 s", ...]``: each timed step by its human name."""
    return [f"{TIMING_LABELS.get(k, k.removesuffix('_s').replace('_', ' '))} {v:.1f} s" for k, v in timings.items()]


def render_markdown(text: str, base: Path | None = None) -> str:
    """Markdown to HTML with raw HTML and images disabled (nothing in a card may reach the network); HTML
    comments, such as the model card's ``<!-- generated: ... -->`` markers, are dropped.

    Relative links would point nowhere once the card is embedded in a report elsewhere: they become plain
    text followed by the file they named (resolved against ``base``, the card's folder, when given);
    absolute (``http:``, ``https:``, ``mailto:``) and in-page (``#...``) links stay."""
    try:
        from markdown_it import MarkdownIt
        from markdown_it.token import Token
    except ImportError:  # pragma: no cover - markdown-it-py comes with rich
        from html import escape

        return f"<pre>{escape(text)}</pre>"
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    tokens = md.parse(re.sub(r"<!--.*?-->", "", text, flags=re.S))  # comments (the card's markers) are not content
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        children: list = []
        pending: list[str | None] = []  # per open link: the file a relative link named, None for a kept link
        for child in token.children:
            if child.type == "link_open":
                href = str(child.attrGet("href") or "")
                if not href.startswith("#") and ":" not in href.split("/")[0]:
                    target = href.split("#")[0]
                    pending.append(str((base / target).resolve()) if base is not None and target else target)
                    continue  # the link's text stays, unlinked
                pending.append(None)
            elif child.type == "link_close" and pending:
                named = pending.pop()
                if named is not None:
                    if named:
                        note = Token("text", "", 0)
                        note.content = f" ({named})"
                        children.append(note)
                    continue
            children.append(child)
        token.children = children
    return md.renderer.render(tokens, md.options, {})


def _environment_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("maskwatch", "torch", "torchvision", "numpy", "grad-cam", "scikit-learn", "matplotlib", "jinja2"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _dataset_counts(info: dict[str, Any], classes: Sequence[str]) -> dict[str, dict[str, int]] | None:
    from maskwatch.data.datasets import DatasetError, open_dataset

    if not info.get("data"):
        return None
    try:
        dataset = open_dataset(
            info["data"],
            classes=classes,
            crops=bool(info.get("crops")),
            min_face=info.get("min_face") or 32,
            crop_margin=DEFAULT_CROP_MARGIN if info.get("crop_margin") is None else float(info["crop_margin"]),
        )
    except (DatasetError, OSError, ValueError) as exc:
        log.warning("cannot list %s for the report: %s", info["data"], exc)
        return None
    return dataset.counts()


# -- images -------------------------------------------------------------------------------------------


class _ImageCache:
    """Decode each file once; hand out the sample's crop (uint8 RGB) and the full image's size."""

    def __init__(self):
        self._decoded: dict[str, Any] = {}

    def get(self, sample) -> tuple[np.ndarray, tuple[int, int]] | None:
        from maskwatch.data.images import BadImageError, load_rgb

        if sample.path not in self._decoded:
            try:
                self._decoded[sample.path] = load_rgb(sample.path)
            except BadImageError:
                self._decoded[sample.path] = None
        image = self._decoded[sample.path]
        if image is None:
            return None
        try:
            return np.asarray(sample.crop(image)), image.size
        except BadImageError:
            return None


def _tile(image01: np.ndarray, cam: np.ndarray) -> tuple[str, str]:
    import cv2

    from maskwatch.explain.cam import overlay

    small = cv2.resize(image01, (TILE_SIZE, TILE_SIZE), interpolation=cv2.INTER_AREA)
    small_cam = cv2.resize(cam, (TILE_SIZE, TILE_SIZE), interpolation=cv2.INTER_AREA)
    return (
        plotting.image_to_data_uri((small * 255).round().astype(np.uint8)),
        plotting.image_to_data_uri(overlay(small, small_cam)),
    )


# -- the report ---------------------------------------------------------------------------------------


def build_report(
    evaluation,
    out: str | Path,
    *,
    model_path: str | Path | None = None,
    run_dir: str | Path | None = None,
    model_card: str | Path | None = None,
    low_confidence: float = 0.6,
    per_gallery: int = 8,
    cam_samples: int = 96,
    method: str = "gradcam",
    feature_samples: int = 3,
    seed: int = 0,
) -> ReportResult:
    """Write the HTML report for ``evaluation`` (a :class:`maskwatch.evaluate.Evaluation`) to ``out``.

    ``model_path`` defaults to the evaluated model; ``run_dir`` (where ``history.csv``, ``data.json`` and
    ``config.yaml`` are looked for) to the model's folder; ``model_card`` to ``MODEL_CARD.md`` beside the
    model. ``low_confidence``: images whose top-class probability is below it go to that gallery.
    """
    import torch
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from maskwatch.checkpoint import build_model, load_checkpoint
    from maskwatch.explain.cam import CamExplainer
    from maskwatch.explain.mass import PARTS, cam_mass_shares, face_region_in_crop, summarize_by_class
    from maskwatch.explain.visuals import (
        capture_feature_maps,
        default_feature_layers,
        first_conv_weights,
        trainable_weights,
    )
    from maskwatch.preprocess import Preprocessing, denormalize, to_batch

    if not 0.0 < low_confidence <= 1.0:
        raise ValueError(f"low_confidence must be in (0, 1], got {low_confidence}")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    model_path = Path(model_path or evaluation.info.get("model", ""))
    run_dir = Path(run_dir) if run_dir is not None else model_path.parent
    checkpoint = load_checkpoint(model_path)
    classes = list(evaluation.classes)
    if list(checkpoint["classes"]) != classes:
        raise ValueError(f"model classes {checkpoint['classes']} differ from the evaluation's {classes}")
    arch = checkpoint["arch"]
    prep = Preprocessing.from_dict(checkpoint["preprocessing"])
    model = build_model(checkpoint)
    info = dict(evaluation.info)
    probabilities = np.asarray(evaluation.probabilities, dtype=np.float64)
    labels = np.asarray(evaluation.labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    report = evaluation.report

    # ---- summary
    t0 = time.perf_counter()
    card_path = find_model_card(model_path, model_card)
    data_json = run_dir / "data.json"
    training_data = json.loads(data_json.read_text()) if data_json.is_file() else None
    evaluated_counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    summary = {
        "model": {
            "path": str(model_path),
            "arch": arch,
            "classes": classes,
            "input": f"{prep.size}x{prep.size}",
            "created": checkpoint.get("created", "?"),
            "size_mb": model_path.stat().st_size / 1e6,
            "sha256": file_sha256(model_path),
        },
        "evaluated": {
            "data": info.get("data"),
            "split": info.get("split"),
            "crops": info.get("crops"),
            "min_face": info.get("min_face"),
            "crop_margin": info.get("crop_margin"),
            "backend": info.get("backend"),
            "counts": evaluated_counts,
            "n": len(labels),
        },
        "dataset_counts": _dataset_counts(info, classes),
        "skipped": [{"path": s.path, "reason": s.reason} for s in evaluation.skipped],
        "training_data": training_data,
        "config": checkpoint.get("config") or {},
        "checkpoint_metrics": json.dumps(checkpoint.get("metrics") or {}, indent=1, default=str),
        "card_path": str(card_path) if card_path else None,
        "card_html": render_markdown(card_path.read_text(encoding="utf-8"), card_path.parent) if card_path else None,
        "card_looked": [str(model_path.parent / MODEL_CARD_NAME), str(model_path.with_suffix(".md"))],
        "versions_model": checkpoint.get("versions") or {},
        "versions_env": _environment_versions(),
    }
    history, history_source = read_history(run_dir, checkpoint)
    training = {
        "rows": len(history),
        "source": history_source,
        "figure": plotting.figure_to_data_uri(plots.plot_training_curves(history)) if history else None,
    }
    timings["summary_s"] = time.perf_counter() - t0

    # ---- metrics
    t0 = time.perf_counter()
    thresholds = analysis.threshold_table(probabilities, labels, classes)
    rel = analysis.reliability(probabilities, labels)
    uncalibrated = evaluation.uncalibrated_probabilities
    temperature = float(evaluation.temperature)
    # before/after temperature scaling, when the model has one and the raw logits are known
    rel_before = analysis.reliability(uncalibrated, labels) if uncalibrated is not None and temperature != 1.0 else None
    both = len(set(labels.tolist())) >= 2
    metrics = {
        "report": report,
        "thresholds": thresholds,
        "confusion": plotting.figure_to_data_uri(plots.plot_confusion(report["confusion_matrix"], classes)),
        "roc": plotting.figure_to_data_uri(plots.plot_roc(labels, probabilities, classes)) if both else None,
        "pr": plotting.figure_to_data_uri(plots.plot_precision_recall(labels, probabilities, classes, thresholds))
        if both
        else None,
        "reliability": plotting.figure_to_data_uri(plots.plot_reliability(rel, rel_before, temperature)),
        "ece": rel.ece,
        "ece_uncalibrated": rel_before.ece if rel_before is not None else None,
        "temperature": temperature,
    }
    timings["metrics_s"] = time.perf_counter() - t0

    # ---- pick what needs a CAM: gallery tiles, and a seeded per-class sample for the mass figure
    picks = analysis.pick_galleries(
        probabilities, labels, len(classes), per_gallery=per_gallery, low_confidence=low_confidence
    )
    rng = np.random.default_rng(seed)
    mass_rows: list[int] = []
    for c in range(len(classes)):
        mine = np.flatnonzero(labels == c)
        mass_rows.extend(sorted(rng.choice(mine, size=min(cam_samples, mine.size), replace=False).tolist()))
    gallery_rows = sorted({p.index for g in picks.values() for ps in g.values() for p in ps})
    wanted = sorted(set(gallery_rows) | set(mass_rows))

    t0 = time.perf_counter()
    cache = _ImageCache()
    crops: dict[int, np.ndarray] = {}
    faces: dict[int, tuple[float, float, float, float]] = {}
    margin = float(info.get("crop_margin") or 0.0) if info.get("crops") else 0.0
    for row in wanted:
        sample = evaluation.samples[row]
        got = cache.get(sample)
        if got is None:
            continue
        crops[row], size = got
        faces[row] = face_region_in_crop(sample.box, margin, size) if info.get("crops") else (0.0, 0.0, 1.0, 1.0)
    del cache
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = [r for r in wanted if r in crops]
    gallery_set, mass_set = set(gallery_rows), set(mass_rows)
    cams: dict[int, np.ndarray] = {}  # gallery rows only; the mass sample keeps just its shares
    shown: dict[int, np.ndarray] = {}
    shares: dict[int, dict[str, float]] = {}
    with CamExplainer(
        model, arch=arch, method=method, batch_size=32, engine="auto", temperature=checkpoint["temperature"]
    ) as explainer:
        for start in range(0, len(rows), 32):
            part = rows[start : start + 32]
            batch = to_batch([crops[r] for r in part], prep)
            result = explainer(batch, targets=[int(predicted[r]) for r in part])
            images01 = denormalize(batch, prep)
            for r, cam, image01 in zip(part, result.cams, images01):
                if r in mass_set:
                    shares[r] = cam_mass_shares(cam, faces[r])
                if r in gallery_set:
                    cams[r], shown[r] = cam, image01
    timings["cam_s"] = time.perf_counter() - t0

    # ---- galleries
    t0 = time.perf_counter()
    galleries = []
    for key, title in analysis.GALLERIES.items():
        per_class = []
        for c, name in enumerate(classes):
            tiles = []
            for pick in picks[key][c]:
                if pick.index not in shown:
                    continue
                source, over = _tile(shown[pick.index], cams[pick.index])
                sample = evaluation.samples[pick.index]
                tiles.append(
                    {
                        "input": source,
                        "overlay": over,
                        "true": classes[pick.label],
                        "pred": classes[pick.predicted],
                        "prob": pick.probability,
                        "p_true": float(probabilities[pick.index, pick.label]),
                        "correct": pick.label == pick.predicted,
                        "name": Path(sample.path).name + (f" {list(sample.box)}" if sample.box else ""),
                    }
                )
            per_class.append({"name": name, "tiles": tiles})
        galleries.append({"key": key, "title": title, "classes": per_class})
    timings["galleries_s"] = time.perf_counter() - t0

    # ---- inside the network
    t0 = time.perf_counter()
    feature_rows: list[int] = []
    for key in ("confident_correct", "misclassified", "low_confidence"):
        for c in range(len(classes)):
            feature_rows.extend(p.index for p in picks[key][c][:1] if p.index in shown)
    feature_rows = list(dict.fromkeys(feature_rows))[:feature_samples]
    layers = default_feature_layers(model, arch)
    feature_figures = []
    if feature_rows and layers:
        batch = to_batch([crops[r] for r in feature_rows], prep)
        maps = capture_feature_maps(model, batch, [name for _, name in layers])
        images01 = denormalize(batch, prep)
        for i, r in enumerate(feature_rows):
            rows_maps = [(label, name, maps[name][i]) for label, name in layers if name in maps]
            fig = plots.plot_feature_maps(images01[i], rows_maps)
            feature_figures.append(
                {
                    "uri": plotting.figure_to_data_uri(fig, dpi=80),
                    "caption": f"{Path(evaluation.samples[r].path).name}: true {classes[labels[r]]}, "
                    f"predicted {classes[predicted[r]]} ({probabilities[r].max():.3f})",
                }
            )
    filter_name, filter_weights = first_conv_weights(model)
    finetune = int((checkpoint.get("config") or {}).get("finetune") or 0)
    weights = trainable_weights(model, arch, finetune)
    internals = {
        "layers": [{"label": label, "name": name} for label, name in layers],
        "feature_figures": feature_figures,
        "filters": plotting.figure_to_data_uri(plots.plot_filters(filter_weights, filter_name), dpi=100),
        "filter_name": filter_name,
        "weights": plotting.figure_to_data_uri(plots.plot_weight_histograms(weights), dpi=80) if weights else None,
        "weight_names": [name for name, _ in weights],
        "finetune": finetune,
    }
    timings["internals_s"] = time.perf_counter() - t0

    # ---- explanation quality
    t0 = time.perf_counter()
    used = [r for r in mass_rows if r in shares]
    table = {part: np.array([shares[r][part] for r in used], dtype=np.float64) for part in PARTS}
    used_labels = labels[used] if used else np.zeros(0, dtype=np.int64)
    mass_summary = summarize_by_class(table, used_labels, classes)
    baseline = {}
    for c, name in enumerate(classes):
        areas = [(f[2] - f[0]) * (f[3] - (f[1] + f[3]) / 2) for r, f in ((r, faces[r]) for r in used) if labels[r] == c]
        baseline[name] = float(np.mean(areas)) if areas else float("nan")
        mass_summary[name]["uniform_lower_face"] = baseline[name]
    quality = {
        "figure": plotting.figure_to_data_uri(plots.plot_cam_mass(table, used_labels, classes, baseline)),
        "summary": mass_summary,
        "method": method,
        "layer": explainer.layer_name,
        "engine": explainer.engine,
        "crops": bool(info.get("crops")),
        "margin": margin,
        "cam_samples": min(cam_samples, max([int((labels == c).sum()) for c in range(len(classes))] or [0])),
    }
    timings["quality_s"] = time.perf_counter() - t0

    # ---- render
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template(TEMPLATE).render(
        title=f"maskwatch report — {model_path.name} on {info.get('data', '?')} [{info.get('split', '?')}]",
        sections=SECTIONS,
        summary=summary,
        training=training,
        metrics=metrics,
        galleries=galleries,
        per_gallery=per_gallery,
        low_confidence=low_confidence,
        internals=internals,
        quality=quality,
        classes=classes,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        timings=timings,
        timing_lines=timing_lines(timings),
        total_seconds=sum(timings.values()),
        torch_threads=torch.get_num_threads(),
    )
    from maskwatch.checkpoint import atomic_write

    def write(path: Path) -> None:
        path.write_text(html, encoding="utf-8")

    atomic_write(out, write)
    seconds = time.perf_counter() - started
    log.info(
        "report %s: %.1f MB in %.1fs (%s)",
        out,
        out.stat().st_size / 1e6,
        seconds,
        ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
    )
    return ReportResult(out, out.stat().st_size, seconds, mass_summary, timings)


# -- a run folder -------------------------------------------------------------------------------------


def evaluation_from_predictions(
    csv_path: str | Path,
    classes: Sequence[str],
    info: dict[str, Any] | None = None,
    skipped: Sequence[dict] = (),
    *,
    temperature: float | None = None,
):
    """Rebuild an :class:`~maskwatch.evaluate.Evaluation` from a ``*.predictions.csv`` written by
    ``evaluate.write_outputs`` (no inference needed). When the CSV has the raw ``logit_<class>`` columns
    and ``temperature`` (the model's) is given, probabilities are recomputed as ``softmax(logits / T)``, so
    they agree with the model as it is now (calibrated after that CSV was written, say)."""
    from maskwatch.data.datasets import Sample
    from maskwatch.data.images import Skipped
    from maskwatch.evaluate import Evaluation
    from maskwatch.runtime.types import softmax

    index = {c: i for i, c in enumerate(classes)}
    samples, labels, probs, scores = [], [], [], []
    with Path(csv_path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [f"p_{c}" for c in classes]
        missing = [c for c in ["path", "box", "true", *columns] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing} (classes {list(classes)})")
        logit_columns = [f"logit_{c}" for c in classes]
        has_logits = all(c in (reader.fieldnames or []) for c in logit_columns)
        for row in reader:
            box = tuple(int(v) for v in row["box"].split()) if row["box"].strip() else None
            samples.append(Sample(row["path"], index[row["true"]], box))  # type: ignore[arg-type]
            labels.append(index[row["true"]])
            probs.append([float(row[c]) for c in columns])
            if has_logits:
                scores.append([float(row[c]) for c in logit_columns])
    logits = np.array(scores, dtype=np.float64).reshape(-1, len(classes)) if has_logits else None
    probabilities = np.array(probs, dtype=np.float64).reshape(-1, len(classes))
    if logits is not None and temperature is not None and len(logits):
        probabilities = softmax(logits, temperature)
    return Evaluation(
        list(classes),
        samples,
        np.array(labels, dtype=np.int64),
        probabilities,
        [Skipped(s["path"], s["reason"]) for s in skipped],
        dict(info or {}),
        logits=logits,
        temperature=1.0 if temperature is None else float(temperature),
    )


def report_for_run(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    data: str | Path | None = None,
    split: str | None = None,
    crops: bool | None = None,
    backend: str = "auto",
    **options: Any,
) -> ReportResult:
    """Report for a training run folder. Without ``data`` it reuses the run's test predictions
    (``metrics.predictions.csv``), else it evaluates the run's model on ``data``/``split``."""
    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.evaluate import evaluate_dataset

    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt"
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no model.pt (is it a run folder of `maskwatch train`?)")
    out = Path(out) if out else run_dir / "report.html"
    checkpoint = load_checkpoint(model_path)
    config = checkpoint.get("config") or {}
    predictions = run_dir / "metrics.predictions.csv"
    if data is None and split is None and crops is None and predictions.is_file():
        metrics_json = run_dir / "metrics.json"
        stored = json.loads(metrics_json.read_text()) if metrics_json.is_file() else {}
        info = {
            "model": str(model_path),
            "data": config.get("data"),
            "split": "test",
            "crops": bool(config.get("crops")),
            "min_face": config.get("min_face"),
            "crop_margin": model_fields(checkpoint, checkpoint["classes"])[CROP_MARGIN],
            "backend": "torch (from metrics.predictions.csv)",
        }
        evaluation = evaluation_from_predictions(
            predictions, checkpoint["classes"], info, stored.get("skipped", []), temperature=checkpoint["temperature"]
        )
    else:
        if data is None:
            data = config.get("data")
            if crops is None:
                crops = bool(config.get("crops"))
        if data is None:
            raise ValueError(f"{run_dir}: no --data given and the run's config names none")
        evaluation = evaluate_dataset(
            model_path,
            data,
            split=split,
            crops=bool(crops),
            min_face=int(config.get("min_face") or 32),
            crop_margin=None,  # the checkpoint's own crop_margin
            backend=backend,
        )
    return build_report(evaluation, out, model_path=model_path, run_dir=run_dir, **options)
