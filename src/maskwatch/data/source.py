"""One dataset of a training run, with its own options (``--data PATH,key=value,...`` or a YAML mapping)."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from maskwatch.core.errors import ConfigError
from maskwatch.core.settings import describe

__all__ = ["DataSource"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DataSource:
    """One dataset of a run with its own options. ``None`` means "the run's top-level value" (``crops``,
    ``min_face``, ``crop_margin``, ``splits``), so ``--data DIR --crops`` keeps meaning what it always did.

    ``weight`` scales how often each of the dataset's training samples is drawn per epoch, relative to the
    other datasets (see :mod:`maskwatch.data.sampling`); ``name`` labels it in logs, history and metrics
    (default: the folder's name)."""

    path: Annotated[str, Field(min_length=1)]
    crops: bool | None = None
    min_face: Annotated[int | None, Field(ge=1)] = None
    crop_margin: Annotated[float | None, Field(ge=0)] = None
    splits: str | None = None  # split-list folder (train.txt, valid.txt, test.txt): images by stem
    weight: Annotated[float, Field(gt=0)] = 1.0
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
        if isinstance(value, str | Path):
            value = {"path": str(value)}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a path or a mapping with 'path', got {value!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key).replace("-", "_")
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
                raise ConfigError(f"{where}: unknown dataset option {key!r}{hint}")
            kwargs[key] = item
        if not kwargs.get("path"):
            raise ConfigError(f"{where}: a dataset needs a 'path'")
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {describe(exc)}") from None

    def to_value(self) -> str | dict[str, Any]:
        """The compact YAML form: the bare path when no option is set."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kept = {k: v for k, v in options.items() if v is not None and not (k == "weight" and v == 1.0)}
        return self.path if list(kept) == ["path"] else kept
