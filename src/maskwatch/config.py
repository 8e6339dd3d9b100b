"""Every training default in one typed place.

A run's configuration is built in three layers: these defaults, an optional YAML file, then CLI flags.
The effective result is written next to each run (``runs/NAME/config.yaml``) so the run can be repeated
with ``maskwatch train --config runs/NAME/config.yaml``. Unknown keys are an error with a "did you
mean" hint rather than being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

# -- what travels with a model (checkpoint dict and ONNX metadata); these are the values for files that predate
# the fields. A model is trained on one face framing, so deployment must crop the same way.
DEFAULT_CROP_MARGIN = 0.15  # face crop = box grown by this fraction of its width / height on each side
MASK_CLASSES = ("with_mask", "mask")  # class names meaning "mask worn correctly", when a model names none


def default_compliant_classes(classes: Sequence[str]) -> list[str]:
    """The classes of a model that count as compliant when the model does not say: those of
    :data:`MASK_CLASSES` it has, in the model's order."""
    return [name for name in classes if name in MASK_CLASSES]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says which and why."""


@dataclass(frozen=True)
class DataSource:
    """One dataset of a run with its own options. ``None`` means "the run's top-level value" (``crops``,
    ``min_face``, ``crop_margin``, ``splits``), so ``--data DIR --crops`` keeps meaning what it always did.

    ``weight`` scales how often each of the dataset's training samples is drawn per epoch, relative to the
    other datasets (see :mod:`maskwatch.data.sampling`); ``name`` labels it in logs, history and metrics
    (default: the folder's name)."""

    path: str
    crops: bool | None = None
    min_face: int | None = None
    crop_margin: float | None = None
    splits: str | None = None  # split-list folder (train.txt, valid.txt, test.txt): images by stem
    weight: float = 1.0
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """The CLI form ``PATH[,key=value,...]``, e.g. ``../shared/data/scenes,crops,min_face=12,weight=2``;
        a bare key means true (``crops``), ``-`` may stand for ``_`` (``min-face=12``)."""
        path, *options = [part.strip() for part in str(text).split(",")]
        if not path:
            raise ConfigError(f"--data {text!r}: the dataset path comes first, then ,key=value options")
        values: dict[str, Any] = {}
        for option in options:
            key, sep, value = option.partition("=")
            values[key.strip()] = value.strip() if sep else True
        return cls.from_value({"path": path, **values}, where=f"--data {text!r}")

    @classmethod
    def from_value(cls, value: Any, where: str = "data") -> DataSource:
        """A YAML/CLI entry: a path, a mapping with ``path`` and options, or a DataSource."""
        if isinstance(value, DataSource):
            return value
        if isinstance(value, (str, Path)):
            value = {"path": str(value)}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a path or a mapping with 'path', got {value!r}")
        names = {f.name: f for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key).replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, list(names), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" Known: {', '.join(names)}."
                raise ConfigError(f"{where}: unknown dataset option {key!r}.{hint}")
            kwargs[key] = _coerce_to(f"{where}: {key}", hints[key], item)
        if not kwargs.get("path"):
            raise ConfigError(f"{where}: a dataset needs a 'path'")
        return cls(**kwargs)

    def to_value(self) -> str | dict[str, Any]:
        """The compact YAML form: the bare path when no option is set."""
        options = {f.name: getattr(self, f.name) for f in fields(self)}
        kept = {k: v for k, v in options.items() if v is not None and not (k == "weight" and v == 1.0)}
        return self.path if list(kept) == ["path"] else kept


@dataclass
class TrainConfig:
    """Settings of one training run. Field docs are shown by ``maskwatch train --help``."""

    # data: one dataset root or a list of them, each a path or {path, crops, min_face, crop_margin, splits,
    # weight, name}; the four settings below are the defaults of every dataset that does not set its own
    data: list[DataSource] = field(default_factory=list)
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

    def validate(self) -> TrainConfig:
        """Check ranges and choices; raise ConfigError naming the bad field."""
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
        for source in self.data:
            checks += [
                (source.weight > 0, f"data {source.path}: weight must be > 0, got {source.weight}"),
                (source.min_face is None or source.min_face >= 1, f"data {source.path}: min_face must be >= 1"),
                (
                    source.crop_margin is None or source.crop_margin >= 0,
                    f"data {source.path}: crop_margin must be >= 0",
                ),
            ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def sources(self) -> list[DataSource]:
        """The datasets with every option filled in (top-level defaults applied) and unique names."""
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
        result = dataclasses.asdict(self)
        values = [source.to_value() for source in self.data]
        single = len(values) == 1 and isinstance(values[0], str)
        result["data"] = (values[0] if single else values) if values else None
        return result

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ConfigError."""
    if name == "data":
        return _coerce_data(value)
    if name == "classes":
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"classes: expected a list of class names, got {value!r}")
        return [str(item).strip() for item in items if str(item).strip()]
    return _coerce_to(name, typing.get_type_hints(TrainConfig)[name], value)


def _coerce_data(value: Any) -> list[DataSource]:
    """``data``: nothing, one path (older configs), or a list of paths / mappings."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [
        DataSource.from_value(item, where=f"data[{i}]" if len(items) > 1 else "data") for i, item in enumerate(items)
    ]


def _coerce_to(name: str, hint: Any, value: Any) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{name} may not be empty")
    for kind in allowed:
        if kind is type(None):
            continue
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            continue
        if kind is int and isinstance(value, float) and not value.is_integer():
            continue
        try:
            if kind in (int, float) and isinstance(value, bool):
                continue
            return kind(value)
        except (TypeError, ValueError):
            continue
    raise ConfigError(f"{name}: cannot use {value!r} as {hint}")


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
    names = [f.name for f in fields(TrainConfig)]
    normalized = key.lower().replace("-", "_")
    if normalized in ALIASES:
        return ALIASES[normalized]
    hint = difflib.get_close_matches(normalized, names, n=1)
    if not hint:
        close_alias = difflib.get_close_matches(normalized, ALIASES, n=1, cutoff=0.85)
        return ALIASES[close_alias[0]] if close_alias else None
    return hint[0]


def merge(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a copy of ``config`` with ``overrides`` applied; unknown keys get a suggestion."""
    names = {f.name: f for f in fields(TrainConfig)}
    updates: dict[str, Any] = {}
    for key, value in overrides.items():
        key = str(key).replace("-", "_")
        if key not in names:
            hint = suggest_key(key)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(f"unknown config key {key!r}.{suggestion}")
        updates[key] = _coerce(key, names[key].type, value)
    return dataclasses.replace(config, **updates)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then keyword overrides (None = not given)."""
    config = TrainConfig()
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of key: value")
        config = merge(config, loaded)
    config = merge(config, {k: v for k, v in overrides.items() if v is not None})
    return _fold_single_dataset(config.validate())


def _fold_single_dataset(config: TrainConfig) -> TrainConfig:
    """One dataset's own options become the top-level ones (``--data DIR,crops`` = ``--data DIR --crops``),
    so a one-dataset run saves ``data: PATH`` as before lists existed; a weight means nothing alone."""
    if len(config.data) != 1 or config.data[0].name is not None:
        return config
    (source,) = config.sources()
    return dataclasses.replace(
        config,
        data=[DataSource(source.path)],
        crops=bool(source.crops),
        min_face=config.min_face if source.min_face is None else source.min_face,
        crop_margin=config.crop_margin if source.crop_margin is None else source.crop_margin,
        splits=source.splits,
    )
