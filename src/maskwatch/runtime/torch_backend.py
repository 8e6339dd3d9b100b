"""PyTorch inference backend (CUDA when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maskwatch.checkpoint import build_model, load_checkpoint
from maskwatch.core.contract import model_fields
from maskwatch.preprocess import Preprocessing
from maskwatch.runtime.types import Classifier


class TorchClassifier(Classifier):
    backend = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        classes,
        preprocessing: Preprocessing,
        batch_size: int = 32,
        device: str | None = None,
        *,
        crop_margin: float | None = None,
        compliant_classes: list[str] | None = None,
        temperature: float | None = None,
    ):
        super().__init__(
            classes,
            preprocessing,
            batch_size,
            crop_margin=crop_margin,
            compliant_classes=compliant_classes,
            temperature=temperature,
        )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, batch_size: int = 32, device: str | None = None) -> TorchClassifier:
        checkpoint = load_checkpoint(path)
        return cls(
            build_model(checkpoint),
            checkpoint["classes"],
            Preprocessing.from_dict(checkpoint["preprocessing"]),
            batch_size,
            device,
            **model_fields(checkpoint, checkpoint["classes"]),
        )

    @torch.no_grad()
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
