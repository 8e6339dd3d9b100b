"""Every training default in one typed place (:class:`TrainConfig`, on the one settings base).

A run's configuration is built in layers (:class:`maskwatch.core.settings.RootSettings`): these defaults, an
optional YAML file, ``MASKWATCH_TRAIN_<KEY>`` environment variables, then CLI flags. The effective result is
written next to each run (``runs/NAME/config.yaml``) so the run can be repeated with ``maskwatch train
--config runs/NAME/config.yaml``. Unknown keys are an error with a "did you mean" hint (names other tools use
for a setting included) rather than being silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.core.contract import DEFAULT_CROP_MARGIN
from maskwatch.core.settings import RootSettings
from maskwatch.data.source import DataSource

__all__ = ["ALIASES", "DataSource", "TrainConfig", "load_config", "suggest_key"]


class TrainConfig(RootSettings):
    """Settings of one training run. Field docs are shown by ``maskwatch train --help``."""

    model_config = SettingsConfigDict(env_prefix="MASKWATCH_TRAIN_")

    # data: one dataset root or a list of them, each a path or {path, crops, min_face, crop_margin, splits,
    # weight, name}; the four settings below are the defaults of every dataset that does not set its own
    data: list[DataSource] = Field(default_factory=list)
    crops: bool = False  # cut face crops from PASCAL VOC scenes instead of using whole images
    min_face: int = 32  # VOC crops: keep faces whose longest box side is at least this (px)
    crop_margin: float = DEFAULT_CROP_MARGIN  # VOC crops: margin around the box; the model records this one
    splits: str | None = None  # split-list folder (train.txt, valid.txt, test.txt: image stems)
    classes: list[str] | None = None  # the model's classes (faces of others are left out); None: union of the data's
    evaluate_test: bool = True  # evaluate each dataset's test split at the end (false: never look at test sets)
    max_pixels: int | None = None  # refuse larger images (decompression bombs); None: $MASKWATCH_MAX_PIXELS or 64 MP
    val_ratio: float = 0.15  # used only when the dataset has no validation split
    test_ratio: float = 0.15  # used only when the dataset has no splits at all

    # model
    arch: str = "mobilenet_v2"
    weights: str = "imagenet"  # imagenet | none | PATH to a state dict
    dropout: float = 0.2

    # optimisation (defaults follow the reference notebook)
    image_size: int = 224
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    class_weights: str = "none"  # none | balanced
    # what an epoch draws: none (each dataset by its weight, as the data comes) | classes (within each dataset,
    # every class as often) | datasets (every dataset as often, times its weight) | datasets_classes (both)
    balance: str = "none"
    patience: int = 4  # early stopping: epochs without validation-loss improvement
    seed: int = 0

    # probabilities: fit a temperature on the valid splits after training and store it with the model
    calibrate: bool = True

    # fine-tuning: a second stage that unfreezes the last K blocks at a lower learning rate
    finetune: int = 0
    finetune_epochs: int = 6
    finetune_lr: float = 1e-4
    # weight averaging (WiSE-FT): the model is (1 - a) x the frozen-backbone model of stage 1 + a x the
    # fine-tuned one; 1 keeps the fine-tuned model. Lower values trade a little in-source skill for other sources
    wise_alpha: float = 1.0

    # augmentation
    augment: bool = True
    rotation: float = 15.0  # degrees, +/-
    hflip: float = 0.5  # probability
    jitter: float = 0.2  # brightness and contrast
    crop_scale: float = 0.8  # random crop keeps at least this fraction of the area (1 disables)
    zoom_out_prob: float = 0.0  # probability of shrinking the face inside a replicated-border canvas
    zoom_out_min: float = 0.7  # smallest scale of that zoom-out
    lowres_prob: float = 0.5  # probability of a downscale-then-upscale view (small, far faces)
    lowres_min: int = 14  # smallest side of that downscale (px)
    lowres_max: int = 56
    blur_prob: float = 0.2  # probability of a Gaussian blur
    # camera conditions (maskwatch.data.corruptions), each with its own probability, at a random severity 1-3
    grayscale_prob: float = 0.0  # a black-and-white camera
    infrared_prob: float = 0.0  # a night camera under its infrared illuminator (grey, high contrast, vignetting)
    motion_blur_prob: float = 0.0  # a person moving past a slow shutter
    jpeg_prob: float = 0.0  # a starved stream bitrate (JPEG quality 30, 20, 12)
    low_light_prob: float = 0.0  # dusk, a dim room (gamma and exposure; the darkest level adds sensor noise)
    noise_prob: float = 0.0  # gain noise

    # speed
    fast_path: bool = True  # cache frozen-backbone features instead of running it every epoch
    views: int = 6  # augmented views of each training image in the feature cache
    feature_backend: str = "auto"  # auto | onnx | torch: engine that computes the cached features
    cache_features: bool = True  # keep those features between runs (same data, backbone and views: reused)
    workers: int = 2  # image-decoding threads
    device: str = "auto"  # auto | cpu | cuda

    # output
    out: str | None = None  # run folder; default runs/<arch>-<timestamp>
    half: bool = False  # store the best model's weights as fp16 (half the size)

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> list[DataSource]:
        """``data``: nothing, one path (older configs), or a list of paths / mappings."""
        if value is None:
            return []
        items = value if isinstance(value, list | tuple) else [value]
        where = (lambda i: f"data[{i}]") if len(items) > 1 else (lambda i: "data")
        return [DataSource.from_value(item, where=where(i)) for i, item in enumerate(items)]

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Any:
        """``classes``: a list, or one comma-separated string (``with_mask,without_mask``)."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return [str(item).strip() for item in value if str(item).strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Ranges and choices; the message names the bad field."""
        from maskwatch.models import available_archs

        checks: list[tuple[bool, str]] = [
            (self.arch in available_archs(), f"arch must be one of {available_archs()}, got {self.arch!r}"),
            (self.image_size >= 32, "image_size must be at least 32"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.finetune_epochs >= 1, "finetune_epochs must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.workers >= 0, "workers must be >= 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.finetune >= 0, "finetune must be >= 0"),
            (self.finetune_lr > 0, "finetune_lr must be > 0"),
            (self.class_weights in ("none", "balanced"), "class_weights must be 'none' or 'balanced'"),
            (
                self.balance in ("none", "classes", "datasets", "datasets_classes"),
                "balance must be none | classes | datasets | datasets_classes",
            ),
            (0 <= self.wise_alpha <= 1, "wise_alpha must be in [0, 1]"),
            *[
                (0 <= getattr(self, f"{name}_prob") <= 1, f"{name}_prob must be in [0, 1]")
                for name in ("grayscale", "infrared", "motion_blur", "jpeg", "low_light", "noise")
            ],
            (self.feature_backend in ("auto", "onnx", "torch"), "feature_backend must be auto|onnx|torch"),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto|cpu|cuda"),
            (0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]"),
            (0 < self.zoom_out_min <= 1, "zoom_out_min must be in (0, 1]"),
            (0 <= self.val_ratio < 1 and 0 <= self.test_ratio < 1, "split ratios must be in [0, 1)"),
            (self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1"),
            (self.views >= 1, "views must be >= 1"),
            (self.max_pixels is None or self.max_pixels >= 0, "max_pixels must be >= 0 (0: no limit)"),
            (self.min_face >= 1, "min_face must be >= 1"),
            (self.crop_margin >= 0, "crop_margin must be >= 0"),
            (0 < self.lowres_min <= self.lowres_max, "need 0 < lowres_min <= lowres_max"),
            (self.classes is None or len(set(self.classes)) >= 2, "classes must name at least two classes"),
            (self.classes is None or len(set(self.classes)) == len(self.classes), "classes lists a name twice"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    # key names other tools use, for "did you mean" (see :data:`ALIASES`)
    @classmethod
    def suggest(cls, key: str) -> str | None:
        return suggest_key(key)

    def sources(self) -> list[DataSource]:
        """The datasets with every option filled in (top-level defaults applied) and unique names."""
        import dataclasses

        resolved: list[DataSource] = []
        seen: set[str] = set()
        for source in self.data:
            name = source.name or Path(source.path.rstrip("/\\")).name or "data"
            base, n = name, 1
            while name in seen:
                n += 1
                name = f"{base}-{n}"
            seen.add(name)
            resolved.append(
                dataclasses.replace(
                    source,
                    crops=self.crops if source.crops is None else source.crops,
                    min_face=self.min_face if source.min_face is None else source.min_face,
                    crop_margin=self.crop_margin if source.crop_margin is None else source.crop_margin,
                    splits=self.splits if source.splits is None else source.splits,
                    name=name,
                )
            )
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready settings; one plain dataset is written as ``data: PATH``, as before lists existed
        (older tools read ``config["data"]`` as a path)."""
        result = self.model_dump(mode="json")
        values = [source.to_value() for source in self.data]
        single = len(values) == 1 and isinstance(values[0], str)
        result["data"] = (values[0] if single else values) if values else None
        return result

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return TrainConfig.model_validate({**dict(self), **changes})


#: Names other tools use for a setting (Keras, PyTorch Lightning, timm, notebooks), for "did you mean".
ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "lr_head": "lr",
    "base_lr": "lr",
    "finetune_learning_rate": "finetune_lr",
    "fine_tune_lr": "finetune_lr",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "max_epochs": "epochs",
    "epoch": "epochs",
    "fine_tune_epochs": "finetune_epochs",
    "batchsize": "batch_size",
    "batch": "batch_size",
    "bs": "batch_size",
    "input_size": "image_size",
    "img_size": "image_size",
    "imgsz": "image_size",
    "size": "image_size",
    "resolution": "image_size",
    "model": "arch",
    "architecture": "arch",
    "backbone": "arch",
    "pretrained": "weights",
    "dataset": "data",
    "data_dir": "data",
    "data_root": "data",
    "output": "out",
    "output_dir": "out",
    "out_dir": "out",
    "run_dir": "out",
    "early_stopping_patience": "patience",
    "random_seed": "seed",
    "wd": "weight_decay",
    "num_workers": "workers",
    "fp16": "half",
    "unfreeze": "finetune",
    "fine_tune": "finetune",
    "augmentation": "augment",
    "dropout_rate": "dropout",
}


def suggest_key(key: str) -> str | None:
    """The TrainConfig field an unknown key most likely means: a known alias, else the closest name."""
    names = list(TrainConfig.model_fields)
    normalized = key.lower().replace("-", "_")
    if normalized in ALIASES:
        return ALIASES[normalized]
    hint = difflib.get_close_matches(normalized, names, n=1)
    if not hint:
        close_alias = difflib.get_close_matches(normalized, ALIASES, n=1, cutoff=0.85)
        return ALIASES[close_alias[0]] if close_alias else None
    return hint[0]


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``MASKWATCH_TRAIN_*`` variables of ``env``
    (``os.environ``), then keyword overrides (None = not given). Raises :class:`ConfigError`."""
    flags = {str(k).replace("-", "_"): v for k, v in overrides.items()}
    return _fold_single_dataset(TrainConfig.load(path, env=env, overrides=flags))


def _fold_single_dataset(config: TrainConfig) -> TrainConfig:
    """One dataset's own options become the top-level ones (``--data DIR,crops`` = ``--data DIR --crops``),
    so a one-dataset run saves ``data: PATH`` as before lists existed; a weight means nothing alone."""
    if len(config.data) != 1 or config.data[0].name is not None:
        return config
    (source,) = config.sources()
    return config.replace(
        data=[DataSource(source.path)],
        crops=bool(source.crops),
        min_face=config.min_face if source.min_face is None else source.min_face,
        crop_margin=config.crop_margin if source.crop_margin is None else source.crop_margin,
        splits=source.splits,
    )
