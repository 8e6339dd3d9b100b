"""``maskwatch explain``: one PNG per image with the input, the CAM overlay(s) and the class probabilities.

Images are read in small batches inside one :class:`~maskwatch.explain.cam.CamExplainer` session (hooks
attached once, released at the end), figures are drawn with matplotlib's object API and dropped after
saving, so explaining hundreds of images in a row keeps memory flat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("maskwatch.explain")


@dataclass
class Explanation:
    path: str
    predicted: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    png: Path | None = None
    error: str | None = None  # set when the image could not be read


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders become their image files (recursively, sorted)."""
    from maskwatch.data.images import has_image_extension

    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and has_image_extension(p))
        else:
            found.append(path)
    return found


def _unique_name(stem: str, method: str, used: set[str]) -> str:
    safe_method = method.replace("+", "p")
    name = f"{stem}.{safe_method}.png"
    index = 1
    while name in used:
        name = f"{stem}-{index}.{safe_method}.png"
        index += 1
    used.add(name)
    return name


def explain_files(
    model_path: str | Path,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    all_classes: bool = False,
    layer: str | None = None,
    batch_size: int = 8,
    dpi: int = 90,
) -> Iterator[Explanation]:
    """Explain each image (treated as a face crop) and write ``OUT/<stem>.<method>.png``; yields one
    :class:`Explanation` per input, unreadable files included (with ``error`` set)."""
    from maskwatch.checkpoint import build_model, load_checkpoint
    from maskwatch.data.images import BadImageError, load_rgb
    from maskwatch.explain.cam import CamExplainer, overlay
    from maskwatch.plotting import plot_explanation
    from maskwatch.preprocess import Preprocessing, denormalize, to_batch

    checkpoint = load_checkpoint(model_path)
    classes = list(checkpoint["classes"])
    prep = Preprocessing.from_dict(checkpoint["preprocessing"])
    model = build_model(checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    with CamExplainer(
        model,
        arch=checkpoint["arch"],
        layer=layer,
        method=method,
        batch_size=batch_size,
        engine="auto",
        temperature=checkpoint["temperature"],  # the calibrated probabilities every prediction shows
    ) as explainer:
        for start in range(0, len(paths), batch_size):
            chunk = [Path(p) for p in paths[start : start + batch_size]]
            images, ok = [], []
            for path in chunk:
                try:
                    images.append(np.asarray(load_rgb(path)))
                    ok.append(path)
                except BadImageError as exc:
                    yield Explanation(str(path), error=exc.reason)
            if not ok:
                continue
            batch = to_batch(images, prep)
            first = explainer(batch)  # predicted class
            maps = {c: explainer(batch, targets=c).cams for c in range(len(classes))} if all_classes else {}
            shown = denormalize(batch, prep)
            for i, path in enumerate(ok):
                probs = first.probabilities[i]
                top = int(first.targets[i])
                overlays = [(f"{method}: {classes[top]} (predicted)", overlay(shown[i], first.cams[i]))]
                if all_classes:
                    overlays += [
                        (f"{method}: {classes[c]}", overlay(shown[i], maps[c][i]))
                        for c in range(len(classes))
                        if c != top
                    ]
                fig = plot_explanation(
                    shown[i], overlays, probs, classes, title=f"{path.name}: {classes[top]} ({probs[top]:.3f})"
                )
                png = out_dir / _unique_name(path.stem, method, used)
                fig.savefig(png, dpi=dpi)
                del fig
                yield Explanation(
                    str(path), classes[top], float(probs[top]), {c: float(p) for c, p in zip(classes, probs)}, png
                )
