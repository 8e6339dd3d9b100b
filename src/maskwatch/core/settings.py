"""The one settings base: every configuration (``train``, ``serve``, ``agent``, the stream engine's settings
embedded in them) is a pydantic model built on :class:`Section`, loaded in the same layers (defaults, a YAML
file, environment variables under a documented prefix, then command-line flags) with the same errors: an
unknown key is a :class:`~maskwatch.core.errors.ConfigError` with a "did you mean" hint, a bad value names
its dotted path and the rule it broke."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from maskwatch.core.errors import ConfigError

__all__ = ["Section", "check_keys", "describe", "drop_none", "merge", "read_yaml"]


class Section(BaseModel):
    """A block of settings: unknown keys are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``list[Model]``, ``Model | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None or get_args(annotation):
        for arg in get_args(annotation):
            found = model_of(arg)
            if found is not None:
                return found
    return None


def check_keys(data: Any, model: type[BaseModel], where: str = "") -> None:
    """Unknown keys anywhere in ``data`` raise :class:`ConfigError` with a "did you mean"."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    aliases = {f.alias: name for name, f in fields.items() if f.alias}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        name = aliases.get(key, key)
        if name not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            tip = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown setting {path!r}{tip}")
        sub = model_of(fields[name].annotation)
        if sub is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                check_keys(item, sub, f"{path}[{i}]")
        elif isinstance(value, dict) and get_origin(fields[name].annotation) is dict:
            for k, item in value.items():
                check_keys(item, sub, f"{path}.{k}")
        else:
            check_keys(value, sub, path)


def describe(error: ValidationError) -> str:
    """A validation error as one line: ``engine.stats_interval: Input should be greater than 0; ...``."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without None values (CLI flags not given), nested mappings included."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping ({} for an empty file); :class:`ConfigError` with the reason."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    return loaded or {}
