"""Figure helpers shared by the insight report and ``maskwatch explain`` (matplotlib, Agg, no GUI): one home,
so neither package needs the other."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["figure_to_data_uri", "image_to_data_uri", "new_figure", "plot_explanation"]


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def figure_to_data_uri(fig: Figure, dpi: int = 90) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_to_data_uri(image: np.ndarray, fmt: str = "JPEG", quality: int = 85) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if fmt.upper() == "JPEG":
        pil.save(buffer, format="JPEG", quality=quality)
        mime = "jpeg"
    else:
        pil.save(buffer, format=fmt)
        mime = fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_explanation(
    image: np.ndarray,
    overlays: Sequence[tuple[str, np.ndarray]],
    probabilities: np.ndarray,
    classes: Sequence[str],
    title: str = "",
) -> Figure:
    """The input, one CAM overlay per explained class, and the class probabilities (``explain``'s PNG)."""
    n = 2 + len(overlays)
    fig = new_figure(2.8 * n, 3.2)
    axes = fig.subplots(1, n, gridspec_kw={"width_ratios": [1] * (n - 1) + [1.2]})
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=9)
    for ax, (label, picture) in zip(axes[1:-1], overlays):
        ax.imshow(picture)
        ax.set_title(label, fontsize=9)
    for ax in axes[:-1]:
        ax.set_xticks([])
        ax.set_yticks([])
    bars = axes[-1]
    order = np.arange(len(classes))
    colors = ["#2ca02c" if i == int(np.argmax(probabilities)) else "#7f7f7f" for i in order]
    bars.barh(order, probabilities, color=colors)
    bars.set_yticks(order, list(classes), fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    for i, p in zip(order, probabilities):
        bars.text(min(p + 0.02, 0.75), i, f"{p:.3f}", va="center", fontsize=8)
    bars.set_title("probabilities", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
