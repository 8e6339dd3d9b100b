"""Transfer-learning fit loop: frozen backbone + new head, then optional fine-tuning of the last K blocks.

The network is cut into a frozen *prefix* and a trainable *tail* (``models.split_model``). Nothing in
the prefix changes during training, so by default (``fast_path``) its outputs are computed once, for
several augmented views of each training image and one clean view of each validation image, with ONNX
Runtime on CPU (about 7x faster than torch eager here), and each epoch only runs the tail over the cache.
With ``--finetune K`` the cut sits before the last K blocks: the cache holds those blocks' inputs, stage 1
gets its pooled features by running the (still frozen) K blocks once over the cache, and stage 2 trains
the K blocks and the head at a lower learning rate. ``fast_path=False`` is the notebook-style loop that
runs the whole network on freshly augmented images every epoch (same stages, same results within noise).

The features are also kept between runs (:mod:`maskwatch.feature_cache`, keyed by content), so another
head recipe on the same data, backbone and views skips the extraction.

Run folder: ``config.yaml`` (effective config), ``history.csv``, ``model.pt`` (best checkpoint, written
atomically), ``last.pt`` (resume state, written after every epoch), ``train.log`` (the log, one line of
metrics per epoch, and the error or interruption that ended a run early), ``metrics.json`` (test split, when
present), ``timings.json`` (written last: the run is finished).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from maskwatch.checkpoint import atomic_torch_save, atomic_write, make_checkpoint
from maskwatch.config import TrainConfig
from maskwatch.data.datasets import LabeledSet, Sample, open_dataset
from maskwatch.data.images import Skipped
from maskwatch.data.loader import make_loader
from maskwatch.data.transforms import eval_transform, train_transform_from_config
from maskwatch.metrics import accuracy_and_macro_f1
from maskwatch.models import create_model, set_trainable, split_model
from maskwatch.preprocess import Preprocessing

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

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    classes: list[str]
    history: list[dict]
    skipped: list[Skipped]
    timings: dict[str, float] = field(default_factory=dict)
    test_metrics: dict | None = None


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
    """The frozen prefix's outputs for the train views and the valid images: from the content-keyed cache
    of an earlier run when one matches, else computed (and kept for the next run)."""
    from maskwatch import feature_cache

    key = None
    if cfg.cache_features:
        settings = {**cfg.to_dict(), "device": run.device.type}
        key = feature_cache.feature_key(settings, {"train": train_samples, "valid": val_samples}, prefix)
        entry = feature_cache.load(key)
        if entry is not None:
            log.info("feature cache reused (%s)", feature_cache.cache_root() / f"{key}.pt")
            return (
                entry["train"],
                entry["train_ok"].numpy(),
                entry["valid"],
                entry["valid_ok"].numpy(),
                "reused",
            )
    runner = PrefixRunner(prefix, cfg.feature_backend, run.device, cfg.image_size)
    views = cfg.views if cfg.augment else 1
    options = {"seed": cfg.seed, "batch_size": cfg.batch_size, "workers": cfg.workers}
    train_cache, train_ok = extract_views(
        runner, train_samples, train_tf, views=views, desc="features train", **options
    )
    val_cache, val_ok = extract_views(runner, val_samples, val_tf, views=1, desc="features valid", **options)
    if key is not None:
        entry = {
            "train": train_cache,
            "train_ok": torch.from_numpy(train_ok),
            "valid": val_cache,
            "valid_ok": torch.from_numpy(val_ok),
        }
        feature_cache.store(key, entry)
    return train_cache, train_ok, val_cache, val_ok, runner.backend


def _no_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
            for x, y in train_batches():
                x, y = x.to(device).float(), y.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                logits = self.tail(x)
                loss = loss_fn(logits, y)
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
            val_loss, val_acc, val_f1 = self.validate(val_batches)
            row = {
                "stage": self.stage,
                "epoch": epoch,
                "train_loss": loss_sum / max(1, total),
                "train_acc": correct / max(1, total),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "val_macro_f1": val_f1,
                "lr": self.lr,
                "seconds": time.perf_counter() - started,
            }
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
    def validate(self, val_batches: Batches) -> tuple[float, float, float]:
        self.tail.eval()
        losses, predictions, labels = [], [], []
        loss_fn = nn.CrossEntropyLoss(weight=self.run.class_weights, reduction="sum")
        for x, y in val_batches():
            logits = self.tail(x.to(self.run.device).float())
            losses.append(float(loss_fn(logits, y.to(self.run.device))))
            predictions.append(logits.argmax(1).cpu().numpy())
            labels.append(y.numpy())
        y_true, y_pred = np.concatenate(labels), np.concatenate(predictions)
        accuracy, macro_f1 = accuracy_and_macro_f1(y_true, y_pred, len(self.run.classes))
        weight = len(y_true) if self.run.class_weights is None else float(self.run.class_weights[y_true].sum())
        return sum(losses) / max(1e-12, weight), accuracy, macro_f1


def _cached_batches(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int, rng: np.random.Generator, shuffle: bool
) -> Batches:
    """Batches from a (views, N, ...) cache: each epoch takes one random view of every sample."""

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = features.shape[1]
        order = rng.permutation(n) if shuffle else np.arange(n)
        views = rng.integers(0, features.shape[0], size=n) if shuffle else np.zeros(n, dtype=np.int64)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield features[torch.from_numpy(views[idx]), torch.from_numpy(idx)], labels[idx]

    return batches


def _live_batches(
    prefix: nn.Module,
    samples: list[Sample],
    transform: Callable,
    cfg: TrainConfig,
    device: torch.device,
    shuffle: bool,
    seed_counter: list[int],
) -> Batches:
    """Notebook-style batches: decode, augment and run the frozen prefix anew every epoch."""

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed_counter[0] += 1
        loader = make_loader(
            samples,
            transform,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            shuffle=shuffle,
            seed=cfg.seed * 7919 + seed_counter[0],
        )
        for batch in loader:
            if batch is None:
                continue
            images, labels, _ = batch
            with torch.no_grad():
                features = prefix.eval()(images.to(device))
            yield features, labels

    return batches


# --------------------------------------------------------------------------------------------------
# A run


class _Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, dataset: LabeledSet, resume: dict | None):
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

    def _class_weights(self) -> torch.Tensor | None:
        if self.cfg.class_weights != "balanced":
            return None
        counts = np.bincount([s.label for s in self.dataset.split("train")], minlength=len(self.classes))
        weights = counts.sum() / (len(self.classes) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def record(self, row: dict) -> None:
        self.history.append(row)
        path = self.run_dir / "history.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(_csv_row(row))
        epoch_log.info(
            "stage %d epoch %d: train loss %.4f acc %.4f | valid loss %.4f acc %.4f macro F1 %.4f | lr %g | %.1fs",
            row["stage"],
            row["epoch"],
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["val_macro_f1"],
            row["lr"],
            row["seconds"],
        )

    def rewrite_history(self) -> None:
        """history.csv exactly as the resume state knows it: epochs written after the last saved state (an
        interrupted epoch) are dropped, so a resumed run does not list them twice."""

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
                writer.writeheader()
                writer.writerows(_csv_row(row) for row in self.history)

        atomic_write(self.run_dir / "history.csv", write)

    def save_best(self, row: dict) -> None:
        metrics = {k: row[k] for k in ("stage", "epoch", "val_loss", "val_acc", "val_macro_f1")}
        checkpoint = make_checkpoint(
            self.model.state_dict(),
            arch=self.cfg.arch,
            classes=self.classes,
            preprocessing=self.prep.to_dict(),
            config=self.cfg.to_dict(),
            metrics={"validation": metrics},
            half=self.cfg.half,
            crop_margin=self.cfg.crop_margin,
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

    def load_best(self) -> None:
        checkpoint = torch.load(self.model_path, map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in checkpoint["state_dict"].items()}
        self.model.load_state_dict(state)


def _csv_row(row: dict) -> dict:
    return {k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()}


def _default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def load_data(cfg: TrainConfig) -> LabeledSet:
    """Open and fully verify the dataset; raise DatasetError before any training if it is unusable."""
    if not cfg.data:
        raise ValueError("no dataset given (--data DIR)")
    dataset = open_dataset(
        cfg.data,
        crops=cfg.crops,
        min_face=cfg.min_face,
        crop_margin=cfg.crop_margin,
        val_ratio=cfg.val_ratio,
        test_ratio=cfg.test_ratio,
        seed=cfg.seed,
    )
    dataset.verify(workers=cfg.workers)
    # A test split is checked too: with one class its macro F1 and per-class scores would mislead.
    dataset.require_trainable(("train", "valid", "test") if "test" in dataset.splits else ("train", "valid"))
    return dataset


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
    counts = dataset.counts()
    log.info("data %s (%s): classes %s, counts %s", cfg.data, dataset.layout, dataset.classes, counts)
    atomic_write(
        run_dir / "data.json",
        lambda p: p.write_text(
            json.dumps(
                {
                    "root": dataset.root,
                    "layout": dataset.layout,
                    "classes": dataset.classes,
                    "counts": counts,
                    "skipped": [s.__dict__ for s in dataset.skipped],
                },
                indent=2,
            )
        ),
    )

    run = _Run(cfg, run_dir, dataset, resume_state)
    if resume_state is not None:
        run.rewrite_history()
    model = run.model
    train_samples, val_samples = dataset.split("train"), dataset.split("valid")
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
        train_cache, train_labels = train_cache[:, train_ok], train_labels[train_ok]
        val_cache, val_labels = val_cache[:, val_ok], val_labels[val_ok]
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
        stage1_train = _cached_batches(head_train, train_labels, cfg.batch_size, rng, shuffle=True)
        stage1_val = _cached_batches(head_val, val_labels, 1024, rng, shuffle=False)
        stage2_train = _cached_batches(train_cache, train_labels, cfg.batch_size, rng, shuffle=True)
        stage2_val = _cached_batches(val_cache, val_labels, 256, rng, shuffle=False)
    else:
        counter = [0]
        prefix_0, _ = split_model(model, cfg.arch, 0)
        stage1_train = _live_batches(prefix_0, train_samples, train_tf, cfg, run.device, True, counter)
        stage1_val = _live_batches(prefix_0, val_samples, val_tf, cfg, run.device, False, counter)
        stage2_train = _live_batches(prefix_k, train_samples, train_tf, cfg, run.device, True, counter)
        stage2_val = _live_batches(prefix_k, val_samples, val_tf, cfg, run.device, False, counter)

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
        set_trainable(model, cfg.arch, k)
        stage = _Stage(run, 2, tail_k, cfg.finetune_lr, cfg.finetune_epochs)
        if resume_state and resumed_stage == 2:
            model.load_state_dict(resume_state["model"])
            stage.resume_from(resume_state)
        stage.fit(stage2_train, stage2_val)
        timings["stage2_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    report_skipped([s for s in dataset.skipped if "during feature extraction" in s.reason])

    result = RunResult(run_dir, run.model_path, dataset.classes, run.history, dataset.skipped, timings)
    if "test" in dataset.splits and dataset.split("test"):
        from maskwatch.evaluate import evaluate_samples, write_outputs

        progress["where"] = "while evaluating the test split (training is done)"
        evaluation = evaluate_samples(run.model_path, dataset.split("test"), dataset.classes, workers=cfg.workers)
        write_outputs(evaluation, run_dir / "metrics.json")
        result.test_metrics = evaluation.report
    atomic_write(run_dir / "timings.json", lambda p: p.write_text(json.dumps(timings, indent=2)))
    return result
