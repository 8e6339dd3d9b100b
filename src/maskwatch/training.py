"""Transfer-learning fit loop: frozen backbone + new head, then optional fine-tuning of the last K blocks.

The network is cut into a frozen *prefix* and a trainable *tail* (``models.split_model``). Nothing in
the prefix changes during training, so by default (``fast_path``) its outputs are computed once, for
several augmented views of each training image and one clean view of each validation image, with ONNX
Runtime on CPU (about 7x faster than torch eager here), and each epoch only runs the tail over the cache.
With ``--finetune K`` the cut sits before the last K blocks: the cache holds those blocks' inputs, stage 1
gets its pooled features by running the (still frozen) K blocks once over the cache, and stage 2 trains
the K blocks and the head at a lower learning rate. ``fast_path=False`` is the notebook-style loop that
runs the whole network on freshly augmented images every epoch (same stages, same results within noise).

The features are also kept between runs (:mod:`maskwatch.feature_cache`, keyed by content, one entry per
dataset), so another head recipe, another mix of the same datasets or a leave-one-source-out fold on the
same backbone and views skips the extraction.

Several datasets train together (``--data A --data B``, :class:`~maskwatch.data.datasets.DatasetMix`):
each keeps its own splits, epochs draw their training samples by the datasets' sampling weights
(:mod:`maskwatch.data.sampling`), the best model is chosen on the concatenation of all valid splits, and
the valid accuracy of each dataset is logged beside it.

Run folder: ``config.yaml`` (effective config), ``history.csv``, ``model.pt`` (best checkpoint, written
atomically), ``last.pt`` (resume state, written after every epoch), ``train.log`` (the log, one line of
metrics per epoch, and the error or interruption that ended a run early), ``data.json`` (classes, counts,
skipped and left-out files per dataset), ``metrics.json`` (test split, when present: one dataset's
metrics as ``evaluate`` writes them; with several datasets ``{"datasets": {name: metrics}}`` beside
``metrics-<name>.json``), ``timings.json`` (written last: the run is finished).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import os
import random
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from maskwatch.checkpoint import atomic_torch_save, atomic_write, make_checkpoint
from maskwatch.config import TrainConfig
from maskwatch.core.timeutil import run_stamp
from maskwatch.data.datasets import DatasetMix, Sample, open_mix
from maskwatch.data.images import Skipped
from maskwatch.data.loader import make_loader
from maskwatch.data.sampling import draw_rates, epoch_order
from maskwatch.data.transforms import eval_transform, train_transform_from_config
from maskwatch.metrics import accuracy_and_macro_f1
from maskwatch.models import create_model, set_trainable, split_model
from maskwatch.preprocess import Preprocessing
from maskwatch.provenance import describe_training_data

if TYPE_CHECKING:
    from maskwatch.calibration import CalibrationResult

log = logging.getLogger("maskwatch.training")
# One line of metrics per epoch, for train.log only (the console shows them on the progress bar).
epoch_log = logging.getLogger("maskwatch.training.epochs")
epoch_log.propagate = False
epoch_log.setLevel(logging.INFO)


class RunFinishedError(Exception):
    """``--resume`` on a run that has nothing left to do."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(
            f"{run_dir} is a finished run (best model {run_dir / 'model.pt'}); nothing to resume. "
            "Start another with a new --out."
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the run folder was left resumable."""

    def __init__(self, run_dir: Path, where: str):
        self.run_dir, self.where = run_dir, where
        super().__init__(f"interrupted {where}")

    @property
    def resume_command(self) -> str:
        return f"maskwatch train --resume --out {self.run_dir}"


HISTORY_FIELDS = ["stage", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"]

# Each batch: inputs, labels, and the dataset (part index of the mix) of each sample.
Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    classes: list[str]
    history: list[dict]
    skipped: list[Skipped]
    timings: dict[str, float] = field(default_factory=dict)
    test_metrics: dict | None = None  # one dataset's test metrics (a single-dataset run)
    calibration: CalibrationResult | None = None  # the temperature fitted on the valid splits (calibrate: true)
    test_by_dataset: dict[str, dict] = field(default_factory=dict)  # every evaluated test split, by dataset


@dataclass(frozen=True)
class Validation:
    """One pass over the valid splits: loss, accuracy and macro F1 of all of them, accuracy per dataset."""

    loss: float
    accuracy: float
    macro_f1: float
    per_dataset: dict[str, float] = field(default_factory=dict)


def per_dataset_field(name: str) -> str:
    """The history column of a dataset's valid accuracy."""
    return f"val_acc_{name}"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Frozen-prefix feature extraction


class PrefixRunner:
    """Runs the frozen prefix on batches: ONNX Runtime on CPU when available, else torch."""

    def __init__(self, prefix: nn.Module, backend: str, device: torch.device, image_size: int):
        self.prefix = prefix.eval()
        self.device = device
        self.session = None
        self.backend = "torch"
        if backend in ("auto", "onnx") and device.type == "cpu":
            try:
                self.session = self._onnx_session(prefix, image_size)
                self.backend = "onnx"
            except Exception as exc:
                if backend == "onnx":
                    raise
                log.warning("ONNX Runtime feature extraction unavailable (%s); using torch", exc)

    @staticmethod
    def _onnx_session(prefix: nn.Module, image_size: int):
        from maskwatch.runtime.onnx_backend import create_session

        example = torch.zeros(1, 3, image_size, image_size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prefix.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    prefix,
                    (example,),
                    str(path),
                    input_names=["input"],
                    output_names=["features"],
                    dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
            return create_session(path, threads=max(1, torch.get_num_threads()))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"input": images.numpy()})[0])
        return self.prefix(images.to(self.device)).float().cpu()


def extract_views(
    runner: PrefixRunner,
    samples: list[Sample],
    transform: Callable,
    *,
    views: int,
    seed: int,
    batch_size: int,
    workers: int,
    desc: str,
) -> tuple[torch.Tensor, np.ndarray]:
    """Prefix outputs for ``views`` passes over ``samples``: (views, N, ...) fp16, and a mask of
    samples that decoded in every pass (a file that fails once is left out everywhere)."""
    ok = np.ones(len(samples), dtype=bool)
    result: torch.Tensor | None = None
    for view in range(views):
        torch.manual_seed(seed * 1000 + view)  # fixes the workers' augmentation seeds for this view
        loader = make_loader(samples, transform, batch_size=batch_size, workers=workers, seed=seed * 1000 + view)
        seen = np.zeros(len(samples), dtype=bool)
        label = f"{desc} view {view + 1}/{views}" if views > 1 else desc
        for batch in tqdm(loader, desc=label, leave=False, unit="batch"):
            if batch is None:
                continue
            images, _, indices = batch
            features = runner(images).half()
            if result is None:
                result = torch.zeros((views, len(samples), *features.shape[1:]), dtype=torch.float16)
            result[view, indices] = features
            seen[indices.numpy()] = True
        ok &= seen
    if result is None:
        raise RuntimeError(f"{desc}: no image could be decoded")
    return result, ok


def _features(
    cfg: TrainConfig,
    run: _Run,
    prefix: nn.Module,
    train_samples: list[Sample],
    val_samples: list[Sample],
    train_tf: Callable,
    val_tf: Callable,
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray, str]:
    """The frozen prefix's outputs for the train views and the valid images, dataset by dataset: each from
    the content-keyed cache of an earlier run when one matches (another mix, another head recipe, a
    leave-one-source-out fold), else computed (and kept for the next run)."""
    mix = run.dataset
    train_groups, val_groups = mix.groups("train"), mix.groups("valid")
    train_parts, train_oks, val_parts, val_oks, sources = [], [], [], [], []
    for index, part in enumerate(mix.parts):
        part_train = [s for s, g in zip(train_samples, train_groups) if g == index]
        part_val = [s for s, g in zip(val_samples, val_groups) if g == index]
        train_cache, train_ok, val_cache, val_ok, source = _part_features(
            cfg, run, prefix, part.name, part_train, part_val, train_tf, val_tf
        )
        train_parts.append(train_cache)
        train_oks.append(train_ok)
        val_parts.append(val_cache)
        val_oks.append(val_ok)
        sources.append(source)
    nonempty_train = [c for c in train_parts if c is not None]
    nonempty_val = [c for c in val_parts if c is not None]
    if not nonempty_train or not nonempty_val:
        raise RuntimeError("no image could be decoded")
    return (
        torch.cat(nonempty_train, dim=1),
        np.concatenate(train_oks),
        torch.cat(nonempty_val, dim=1),
        np.concatenate(val_oks),
        ", ".join(sorted(set(sources))),
    )


def _part_features(
    cfg: TrainConfig,
    run: _Run,
    prefix: nn.Module,
    name: str,
    train_samples: list[Sample],
    val_samples: list[Sample],
    train_tf: Callable,
    val_tf: Callable,
) -> tuple[torch.Tensor | None, np.ndarray, torch.Tensor | None, np.ndarray, str]:
    """One dataset's cached or computed features (None for a split it has no samples in)."""
    from maskwatch import feature_cache

    key = None
    if cfg.cache_features:
        settings = {**cfg.to_dict(), "device": run.device.type}
        key = feature_cache.feature_key(settings, {"train": train_samples, "valid": val_samples}, prefix)
        entry = feature_cache.load(key)
        if entry is not None:
            log.info("feature cache reused for %s (%s)", name, feature_cache.cache_root() / f"{key}.pt")
            return entry["train"], entry["train_ok"].numpy(), entry["valid"], entry["valid_ok"].numpy(), "reused"
    runner = PrefixRunner(prefix, cfg.feature_backend, run.device, cfg.image_size)
    views = cfg.views if cfg.augment else 1
    options = {"seed": cfg.seed, "batch_size": cfg.batch_size, "workers": cfg.workers}
    empty = np.zeros(0, dtype=bool)
    train_cache, train_ok = (
        extract_views(runner, train_samples, train_tf, views=views, desc=f"features {name} train", **options)
        if train_samples
        else (None, empty)
    )
    val_cache, val_ok = (
        extract_views(runner, val_samples, val_tf, views=1, desc=f"features {name} valid", **options)
        if val_samples
        else (None, empty)
    )
    if key is not None:
        entry = {
            "train": train_cache,
            "train_ok": torch.from_numpy(train_ok),
            "valid": val_cache,
            "valid_ok": torch.from_numpy(val_ok),
        }
        feature_cache.store(key, entry)
    return train_cache, train_ok, val_cache, val_ok, runner.backend


def _no_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return iter(())


# --------------------------------------------------------------------------------------------------
# The epoch loop, shared by the cached and the plain path


def _train_mode(tail: nn.Module) -> None:
    """Dropout on, BatchNorm statistics frozen (small data must not overwrite ImageNet's)."""
    tail.train()
    for module in tail.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _Stage:
    """Trains ``tail`` for one stage with early stopping on validation loss; writes history and checkpoints."""

    def __init__(self, run: _Run, stage: int, tail: nn.Module, lr: float, epochs: int):
        self.run, self.stage, self.tail, self.epochs = run, stage, tail, epochs
        params = [p for p in tail.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=run.cfg.weight_decay)
        self.lr = lr
        self.best_loss = float("inf")
        self.bad_epochs = 0
        self.start_epoch = 1

    def resume_from(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_loss = state["best_loss"]
        self.bad_epochs = state["bad_epochs"]
        self.start_epoch = state["epoch"] + 1

    def fit(self, train_batches: Batches, val_batches: Batches) -> None:
        cfg, run = self.run.cfg, self.run
        loss_fn = nn.CrossEntropyLoss(weight=run.class_weights, label_smoothing=cfg.label_smoothing)
        device = run.device
        bar = tqdm(range(self.start_epoch, self.epochs + 1), desc=f"stage {self.stage}", unit="epoch")
        for epoch in bar:
            started = time.perf_counter()
            _train_mode(self.tail)
            total, correct, loss_sum = 0, 0, 0.0
            for x, y, _ in train_batches():
                x, y = x.to(device).float(), y.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                logits = self.tail(x)
                loss = loss_fn(logits, y)
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
            valid = self.validate(val_batches)
            val_loss, val_f1 = valid.loss, valid.macro_f1
            row = {
                "stage": self.stage,
                "epoch": epoch,
                "train_loss": loss_sum / max(1, total),
                "train_acc": correct / max(1, total),
                "val_loss": val_loss,
                "val_acc": valid.accuracy,
                "val_macro_f1": val_f1,
                "lr": self.lr,
                "seconds": time.perf_counter() - started,
            }
            if len(self.run.dataset.parts) > 1:
                row.update({per_dataset_field(name): acc for name, acc in valid.per_dataset.items()})
            run.record(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_loss=f"{val_loss:.3f}", val_f1=f"{val_f1:.3f}")
            if val_loss < self.best_loss - 1e-6:
                self.best_loss, self.bad_epochs = val_loss, 0
                run.save_best(row)
            else:
                self.bad_epochs += 1
            stop = self.bad_epochs >= run.cfg.patience
            run.save_resume_state(self, epoch, done=stop or epoch == self.epochs)
            if stop:
                log.info(
                    "stage %d: early stop after epoch %d (no val-loss gain for %d epochs)",
                    self.stage,
                    epoch,
                    self.bad_epochs,
                )
                break
        bar.close()

    @torch.no_grad()
    def validate(self, val_batches: Batches) -> Validation:
        """Loss, accuracy and macro F1 over every valid split together (the model is selected on these), and
        each dataset's accuracy."""
        self.tail.eval()
        losses, predictions, labels, groups = [], [], [], []
        loss_fn = nn.CrossEntropyLoss(weight=self.run.class_weights, reduction="sum")
        for x, y, g in val_batches():
            logits = self.tail(x.to(self.run.device).float())
            losses.append(float(loss_fn(logits, y.to(self.run.device))))
            predictions.append(logits.argmax(1).cpu().numpy())
            labels.append(y.numpy())
            groups.append(np.asarray(g))
        y_true, y_pred = np.concatenate(labels), np.concatenate(predictions)
        group = np.concatenate(groups)
        accuracy, macro_f1 = accuracy_and_macro_f1(y_true, y_pred, len(self.run.classes))
        weight = len(y_true) if self.run.class_weights is None else float(self.run.class_weights[y_true].sum())
        per_dataset = {
            name: float((y_true[group == i] == y_pred[group == i]).mean())
            for i, name in enumerate(self.run.dataset.names)
            if (group == i).any()
        }
        return Validation(sum(losses) / max(1e-12, weight), accuracy, macro_f1, per_dataset)


def _cached_batches(
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    shuffle: bool,
    weights: list[float] | None = None,
    balance: str = "none",
) -> Batches:
    """Batches from a (views, N, ...) cache: each epoch draws its samples by the datasets' ``weights`` and
    ``balance`` (:func:`~maskwatch.data.sampling.epoch_order`; every sample once when the weights are equal and
    nothing is balanced) and takes one random view of each draw."""
    group_tensor = torch.from_numpy(np.asarray(groups, dtype=np.int64))
    label_array = labels.numpy()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = features.shape[1]
        order = (
            epoch_order(groups, weights or [1.0], rng, labels=label_array, balance=balance) if shuffle else np.arange(n)
        )
        views = rng.integers(0, features.shape[0], size=len(order)) if shuffle else np.zeros(n, dtype=np.int64)
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start : start + batch_size])
            view = torch.from_numpy(views[start : start + batch_size])
            yield features[view, idx], labels[idx], group_tensor[idx]

    return batches


def _live_batches(
    prefix: nn.Module,
    samples: list[Sample],
    groups: np.ndarray,
    transform: Callable,
    cfg: TrainConfig,
    device: torch.device,
    shuffle: bool,
    seed_counter: list[int],
    weights: list[float] | None = None,
) -> Batches:
    """Notebook-style batches: decode, augment and run the frozen prefix anew every epoch. Unequal dataset
    ``weights`` and ``cfg.balance`` draw each epoch's samples as the cached path does
    (:func:`~maskwatch.data.sampling.epoch_order`)."""
    groups = np.asarray(groups, dtype=np.int64)
    sample_labels = np.array([s.label for s in samples], dtype=np.int64)
    weighted = shuffle and ((weights is not None and len(set(weights)) > 1) or cfg.balance != "none")

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        seed_counter[0] += 1
        seed = cfg.seed * 7919 + seed_counter[0]
        rng = np.random.default_rng(seed)
        order = (
            epoch_order(groups, weights or [1.0], rng, labels=sample_labels, balance=cfg.balance) if weighted else None
        )
        loader = make_loader(
            samples if order is None else [samples[i] for i in order],
            transform,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            shuffle=shuffle and order is None,
            seed=seed,
        )
        for batch in loader:
            if batch is None:
                continue
            images, labels, indices = batch
            positions = indices.numpy() if order is None else order[indices.numpy()]
            with torch.no_grad():
                features = prefix.eval()(images.to(device))
            yield features, labels, torch.from_numpy(groups[positions])

    return batches


# --------------------------------------------------------------------------------------------------
# A run


class _Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, dataset: DatasetMix, resume: dict | None):
        self.cfg, self.run_dir, self.dataset = cfg, run_dir, dataset
        self.classes = dataset.classes
        self.device = resolve_device(cfg.device)
        self.prep = Preprocessing(size=cfg.image_size)
        self.history: list[dict] = list(resume["history"]) if resume else []
        self.resume = resume
        self.model = create_model(cfg.arch, len(self.classes), weights=cfg.weights, dropout=cfg.dropout).to(self.device)
        if resume:
            self.model.load_state_dict(resume["model"])
        self.class_weights = self._class_weights()
        self.model_path = run_dir / "model.pt"
        self.stage1_path = run_dir / "model-stage1.pt"  # the best frozen-backbone model (with --finetune)
        # what the model learnt from and was chosen on (maskwatch.provenance), stored in every checkpoint
        self.training_data: dict[str, Any] | None = None
        extra = [per_dataset_field(name) for name in dataset.names] if len(dataset.parts) > 1 else []
        self.history_fields = HISTORY_FIELDS + extra

    def _class_weights(self) -> torch.Tensor | None:
        """``balanced``: inverse class frequencies as the epochs draw them (dataset weights included)."""
        if self.cfg.class_weights != "balanced":
            return None
        labels = [s.label for s in self.dataset.split("train")]
        draws = np.asarray(self.dataset.weights)[self.dataset.groups("train")]
        counts = np.bincount(labels, weights=draws, minlength=len(self.classes))
        weights = counts.sum() / (len(self.classes) * np.maximum(counts, 1e-12))
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def record(self, row: dict) -> None:
        self.history.append(row)
        path = self.run_dir / "history.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.history_fields)
            if new:
                writer.writeheader()
            writer.writerow(_csv_row(row))
        per_dataset = " ".join(
            f"{name} {row[per_dataset_field(name)]:.4f}"
            for name in self.dataset.names
            if per_dataset_field(name) in row
        )
        epoch_log.info(
            "stage %d epoch %d: train loss %.4f acc %.4f | valid loss %.4f acc %.4f macro F1 %.4f%s | lr %g | %.1fs",
            row["stage"],
            row["epoch"],
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["val_macro_f1"],
            f" (acc {per_dataset})" if per_dataset else "",
            row["lr"],
            row["seconds"],
        )

    def rewrite_history(self) -> None:
        """history.csv exactly as the resume state knows it: epochs written after the last saved state (an
        interrupted epoch) are dropped, so a resumed run does not list them twice."""

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.history_fields)
                writer.writeheader()
                writer.writerows(_csv_row(row) for row in self.history)

        atomic_write(self.run_dir / "history.csv", write)

    def save_best(self, row: dict) -> None:
        keys = ("stage", "epoch", "val_loss", "val_acc", "val_macro_f1", *self.history_fields[len(HISTORY_FIELDS) :])
        metrics = {k: row[k] for k in keys if k in row}
        checkpoint = make_checkpoint(
            self.model.state_dict(),
            arch=self.cfg.arch,
            classes=self.classes,
            preprocessing=self.prep.to_dict(),
            config=self.cfg.to_dict(),
            metrics={"validation": metrics},
            half=self.cfg.half,
            crop_margin=self.cfg.crop_margin,
            training_data=self.training_data,
        )
        atomic_torch_save(checkpoint, self.model_path)

    def save_resume_state(self, stage: _Stage, epoch: int, done: bool) -> None:
        state = {
            "stage": stage.stage,
            "epoch": epoch,
            "stage_done": done,
            "model": self.model.state_dict(),
            "optimizer": stage.optimizer.state_dict(),
            "best_loss": stage.best_loss,
            "bad_epochs": stage.bad_epochs,
            "history": self.history,
        }
        atomic_torch_save(state, self.run_dir / "last.pt")

    def average_with_stage1(self, alpha: float) -> None:
        """WiSE-FT: model.pt becomes ``(1 - alpha) * stage 1 + alpha * fine-tuned``; the fine-tuned model is kept
        as ``model-finetuned.pt``."""
        from maskwatch.checkpoint import interpolate_checkpoints

        finetuned = torch.load(self.model_path, map_location="cpu", weights_only=True)
        frozen = torch.load(self.stage1_path, map_location="cpu", weights_only=True)
        atomic_torch_save(finetuned, self.run_dir / "model-finetuned.pt")
        averaged = interpolate_checkpoints(frozen, finetuned, alpha, note="stage 1 (frozen backbone) and stage 2")
        atomic_torch_save(averaged, self.model_path)
        log.info("weight averaging (WiSE-FT): model.pt = %.2f x stage 1 + %.2f x fine-tuned", 1 - alpha, alpha)

    def load_best(self) -> None:
        checkpoint = torch.load(self.model_path, map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in checkpoint["state_dict"].items()}
        self.model.load_state_dict(state)


def _csv_row(row: dict) -> dict:
    return {k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()}


def _default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{run_stamp()}"


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("maskwatch").addHandler(handler)
    if logging.getLogger("maskwatch").getEffectiveLevel() > logging.INFO:
        logging.getLogger("maskwatch").setLevel(logging.INFO)
    epoch_log.addHandler(handler)
    return handler


def _log_to_file(handler: logging.Handler, level: int, message: str, exc_info: Any = None) -> None:
    """A record for train.log only (the console gets the CLI's one-line message instead)."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), exc_info)
    handler.handle(record)


def load_data(cfg: TrainConfig) -> DatasetMix:
    """Open and fully verify the datasets; raise DatasetError before any training if they are unusable.
    With ``evaluate_test: false`` the test splits are neither decoded nor checked."""
    if not cfg.data:
        raise ValueError("no dataset given (--data DIR)")
    mix = open_mix(
        cfg.sources(), classes=cfg.classes, val_ratio=cfg.val_ratio, test_ratio=cfg.test_ratio, seed=cfg.seed
    )
    mix.verify(None if cfg.evaluate_test else ("train", "valid"), workers=cfg.workers)
    # One dataset's test split is checked too: with one class its macro F1 and per-class scores would
    # mislead. With several, a one-class test split is reported and not evaluated (_evaluate_tests).
    with_test = cfg.evaluate_test and len(mix.parts) == 1 and "test" in mix.parts[0].data.splits
    mix.require_trainable(("train", "valid", "test") if with_test else ("train", "valid"))
    return mix


def report_skipped(skipped: list[Skipped]) -> None:
    if not skipped:
        return
    log.warning("skipped %d unusable file(s):", len(skipped))
    for item in skipped:
        log.warning("  %s: %s", item.path, item.reason)


def fit(cfg: TrainConfig, *, resume: bool = False) -> RunResult:
    """Train a classifier as ``cfg`` says; return where the run and its best model are."""
    run_dir = Path(cfg.out) if cfg.out else _default_run_dir(cfg)
    resume_state = None
    if resume:
        last = run_dir / "last.pt"
        if last.is_file():
            resume_state = torch.load(last, map_location="cpu", weights_only=True)
            if _finished(resume_state, cfg) and (run_dir / "timings.json").is_file():
                raise RunFinishedError(run_dir)
        elif not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume: no {last} to continue from")
        # else: stopped before its first epoch ended; it starts again in the same folder
    elif (run_dir / "model.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pick another --out or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run_dir)
    progress: dict[str, Any] = {"where": "while loading the data"}
    try:
        with _pixel_limit(cfg.max_pixels):
            return _fit(cfg, run_dir, resume_state, progress)
    except KeyboardInterrupt as exc:
        interrupted = TrainingInterrupted(run_dir, progress["where"])
        _log_to_file(
            handler,
            logging.WARNING,
            f"{interrupted}; the run is resumable: {interrupted.resume_command}",
        )
        raise interrupted from exc
    except Exception as exc:
        _log_to_file(
            handler,
            logging.ERROR,
            f"training failed {progress['where']}: {exc}",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        raise
    finally:
        logging.getLogger("maskwatch").removeHandler(handler)
        epoch_log.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """The config's ``max_pixels`` as the decoder's limit for this run (the CLI's --max-pixels and
    $MASKWATCH_MAX_PIXELS set the same variable); None leaves it alone."""
    from maskwatch.data.images import MAX_PIXELS_ENV

    if max_pixels is None:
        yield
        return
    previous = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(max_pixels)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous


def _finished(state: dict, cfg: TrainConfig) -> bool:
    """Whether a resume state says every training stage is done."""
    last_stage = 2 if cfg.finetune else 1
    return bool(state.get("stage_done")) and int(state.get("stage", 0)) >= last_stage


def _fit(cfg: TrainConfig, run_dir: Path, resume_state: dict | None, progress: dict[str, Any]) -> RunResult:
    timings: dict[str, float] = {}
    seed_everything(cfg.seed)
    started = time.perf_counter()
    dataset = load_data(cfg)
    report_skipped(dataset.skipped)
    cfg.save(run_dir / "config.yaml")
    if resume_state is None:
        (run_dir / "history.csv").unlink(missing_ok=True)
    _describe_data(dataset, run_dir)

    run = _Run(cfg, run_dir, dataset, resume_state)
    run.training_data = describe_training_data(dataset, cfg.sources(), workers=max(1, cfg.workers))
    if resume_state is not None:
        run.rewrite_history()
    model = run.model
    train_samples, val_samples = dataset.split("train"), dataset.split("valid")
    train_groups, val_groups = dataset.groups("train"), dataset.groups("valid")
    weights = dataset.weights
    train_labels = torch.tensor([s.label for s in train_samples])
    val_labels = torch.tensor([s.label for s in val_samples])
    train_tf, val_tf = train_transform_from_config(cfg), eval_transform(cfg.image_size)
    rng = np.random.default_rng(cfg.seed)
    k = cfg.finetune

    resumed_stage = resume_state["stage"] if resume_state else 0
    stage1_done = resume_state is not None and (resumed_stage > 1 or resume_state["stage_done"])
    stage2_done = resume_state is not None and resumed_stage == 2 and resume_state["stage_done"]

    set_trainable(model, cfg.arch, 0)
    prefix_k, tail_k = split_model(model, cfg.arch, k)
    _, head = split_model(model, cfg.arch, 0)
    training_done = stage1_done and (not k or stage2_done)
    if training_done:  # interrupted during the test evaluation: no features needed
        stage1_train = stage1_val = stage2_train = stage2_val = _no_batches
    elif cfg.fast_path:
        progress["where"] = "while computing the feature cache"
        t0 = time.perf_counter()
        train_cache, train_ok, val_cache, val_ok, source = _features(
            cfg, run, prefix_k, train_samples, val_samples, train_tf, val_tf
        )
        timings["feature_cache_s"] = time.perf_counter() - t0
        log.info(
            "feature cache (%s): train %s, valid %s in %.1fs",
            source,
            tuple(train_cache.shape),
            tuple(val_cache.shape),
            timings["feature_cache_s"],
        )
        for split_samples, ok in ((train_samples, train_ok), (val_samples, val_ok)):
            for sample in np.asarray(split_samples, dtype=object)[~ok]:
                dataset.skipped.append(Skipped(sample.path, "failed to decode during feature extraction"))
        train_cache, train_labels, train_groups = (
            train_cache[:, train_ok],
            train_labels[train_ok],
            train_groups[train_ok],
        )
        val_cache, val_labels, val_groups = val_cache[:, val_ok], val_labels[val_ok], val_groups[val_ok]
        if k:
            pooled = nn.Sequential(*list(tail_k.children())[:-1]).eval()  # frozen blocks + pool
            with torch.no_grad():
                head_train = torch.stack(
                    [
                        torch.cat([pooled(c.float().to(run.device)).half().cpu() for c in chunk.split(256)])
                        for chunk in train_cache
                    ]
                )
                head_val = torch.stack(
                    [
                        torch.cat([pooled(c.float().to(run.device)).half().cpu() for c in chunk.split(256)])
                        for chunk in val_cache
                    ]
                )
        else:
            head_train, head_val = train_cache, val_cache
        stage1_train = _cached_batches(
            head_train, train_labels, train_groups, cfg.batch_size, rng, True, weights, cfg.balance
        )
        stage1_val = _cached_batches(head_val, val_labels, val_groups, 1024, rng, shuffle=False)
        stage2_train = _cached_batches(
            train_cache, train_labels, train_groups, cfg.batch_size, rng, True, weights, cfg.balance
        )
        stage2_val = _cached_batches(val_cache, val_labels, val_groups, 256, rng, shuffle=False)
    else:
        counter = [0]
        prefix_0, _ = split_model(model, cfg.arch, 0)
        live = functools.partial(_live_batches, cfg=cfg, device=run.device, seed_counter=counter)
        stage1_train = live(prefix_0, train_samples, train_groups, train_tf, shuffle=True, weights=weights)
        stage1_val = live(prefix_0, val_samples, val_groups, val_tf, shuffle=False)
        stage2_train = live(prefix_k, train_samples, train_groups, train_tf, shuffle=True, weights=weights)
        stage2_val = live(prefix_k, val_samples, val_groups, val_tf, shuffle=False)

    t0 = time.perf_counter()
    if not stage1_done:
        progress["where"] = "in stage 1 (head)"
        stage = _Stage(run, 1, head, cfg.lr, cfg.epochs)
        if resume_state and resumed_stage == 1:
            stage.resume_from(resume_state)
        stage.fit(stage1_train, stage1_val)
    timings["stage1_s"] = time.perf_counter() - t0

    if k and not stage2_done:
        progress["where"] = f"in stage 2 (fine-tuning the last {k} blocks)"
        t0 = time.perf_counter()
        if run.model_path.exists():
            run.load_best()  # fine-tune from the best head, not the last epoch's
            if not resume_state or resumed_stage == 1:  # the frozen-backbone model, for weight averaging
                atomic_write(run.stage1_path, lambda tmp: tmp.write_bytes(run.model_path.read_bytes()))
        set_trainable(model, cfg.arch, k)
        stage = _Stage(run, 2, tail_k, cfg.finetune_lr, cfg.finetune_epochs)
        if resume_state and resumed_stage == 2:
            model.load_state_dict(resume_state["model"])
            stage.resume_from(resume_state)
        stage.fit(stage2_train, stage2_val)
        timings["stage2_s"] = time.perf_counter() - t0
        if cfg.wise_alpha < 1.0:
            run.average_with_stage1(cfg.wise_alpha)
    timings["total_s"] = time.perf_counter() - started
    report_skipped([s for s in dataset.skipped if "during feature extraction" in s.reason])

    result = RunResult(run_dir, run.model_path, dataset.classes, run.history, dataset.skipped, timings)
    if cfg.calibrate:  # before the test evaluation, so its metrics show ECE with and without the temperature
        from maskwatch.calibration import calibrate_checkpoint

        progress["where"] = "while calibrating on the valid splits (training is done)"
        t0 = time.perf_counter()
        calibration = calibrate_checkpoint(
            run.model_path,
            dataset.split("valid"),
            dataset.classes,
            workers=cfg.workers,
            source="valid split of " + ", ".join(dataset.names),
        )
        timings["calibration_s"] = time.perf_counter() - t0
        result.calibration = calibration
        log.info("calibration: %s", calibration.summary())
    if cfg.evaluate_test:
        progress["where"] = "while evaluating the test split (training is done)"
        _evaluate_tests(cfg, dataset, run, result)
    else:
        log.info("test splits not evaluated (evaluate_test: false)")
    atomic_write(run_dir / "timings.json", lambda p: p.write_text(json.dumps(timings, indent=2)))
    return result


def _describe_data(dataset: DatasetMix, run_dir: Path) -> None:
    """Log the data and write ``data.json``: classes, counts, skipped and left-out files, per dataset."""
    train_groups = dataset.groups("train")
    rates = draw_rates(train_groups, dataset.weights)
    parts = []
    for part, rate in zip(dataset.parts, rates):
        data = part.data
        counts = data.counts()
        log.info("data %s = %s (%s): counts %s", part.name, data.root, data.layout, counts)
        if data.left_out:
            log.info("data %s: left out %s", part.name, dict(data.left_out))
        if len(dataset.parts) > 1:
            log.info(
                "data %s: weight %g, each training sample drawn %.2f times per epoch", part.name, part.weight, rate
            )
        parts.append(
            {
                "name": part.name,
                "root": data.root,
                "layout": data.layout,
                "weight": part.weight,
                "draws_per_sample_per_epoch": rate,
                "counts": counts,
                "left_out": dict(data.left_out),
                "skipped": [s.__dict__ for s in data.skipped],
            }
        )
    log.info("classes %s", dataset.classes)
    summary: dict[str, Any] = {"classes": dataset.classes, "counts": dataset.counts()}
    if len(parts) == 1:  # the single-dataset layout of older runs
        summary = {"root": parts[0]["root"], "layout": parts[0]["layout"], **summary}
    summary["skipped"] = [s.__dict__ for s in dataset.skipped]
    summary["datasets"] = parts
    atomic_write(run_dir / "data.json", lambda p: p.write_text(json.dumps(summary, indent=2)))


def _evaluate_tests(cfg: TrainConfig, dataset: DatasetMix, run: _Run, result: RunResult) -> None:
    """Evaluate the best model on each dataset's test split. One dataset: ``metrics.json`` as ``evaluate``
    writes it. Several: ``metrics-<name>.json`` (+ figure and predictions) each, and ``metrics.json`` =
    ``{"datasets": {name: metrics}}``; a one-class test split is listed as not evaluated."""
    from maskwatch.evaluate import evaluate_samples, write_outputs

    single = len(dataset.parts) == 1
    combined: dict[str, Any] = {}
    for part in dataset.parts:
        samples = part.data.splits.get("test", [])
        if not samples:
            continue
        present = {s.label for s in samples}
        if len(present) < 2:
            reason = f"one class only ({', '.join(dataset.classes[i] for i in sorted(present))})"
            log.warning("test split of %s not evaluated: %s", part.name, reason)
            combined[part.name] = {"not_evaluated": reason}
            continue
        evaluation = evaluate_samples(run.model_path, samples, dataset.classes, workers=cfg.workers)
        evaluation.info = {"data": part.data.root, "dataset": part.name, "split": "test"}
        path = run.run_dir / ("metrics.json" if single else f"metrics-{re.sub(r'[^A-Za-z0-9_-]', '_', part.name)}.json")
        report = write_outputs(evaluation, path)
        result.test_by_dataset[part.name] = report
        combined[part.name] = report
        if single:
            result.test_metrics = report
    if not single and combined:
        atomic_write(run.run_dir / "metrics.json", lambda p: p.write_text(json.dumps({"datasets": combined}, indent=2)))
