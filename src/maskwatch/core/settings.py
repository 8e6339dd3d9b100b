"""The one settings base: every configuration (``train``, ``serve``, ``agent``, the stream engine's settings
embedded in them) is a pydantic model built on :class:`Section`; the top-level ones are :class:`RootSettings`
(pydantic-settings), loaded in the same layers by :meth:`RootSettings.load`, later ones winning:

1. the defaults in the model,
2. a YAML file (``--config FILE``),
3. environment variables named ``<prefix><key>``, nested keys joined by ``__``
   (``MASKWATCH_SERVE_ENGINE__STATS_INTERVAL=30``; lists and mappings as JSON; each root has its prefix),
4. command-line flags.

Errors are the same everywhere: an unknown key (in the file, the flags or a prefixed environment variable) is a
:class:`~maskwatch.core.errors.ConfigError` with a "did you mean" hint; a bad value names its dotted path and
the rule it broke."""

from __future__ import annotations

import contextvars
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.providers.env import parse_env_vars

from maskwatch.core.errors import ConfigError

__all__ = ["RootSettings", "Section", "check_keys", "describe", "drop_none", "merge", "read_yaml"]


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
            suggest = getattr(model, "suggest", None)  # a model may know other tools' names for its keys
            close = suggest(str(key)) if callable(suggest) else None
            hint = [close] if close else difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
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


# -- top-level settings: defaults < YAML < environment < flags ---------------------------------------------

_FILE_LAYER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("maskwatch_file", default=None)
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("maskwatch_environ", default=None)


class _FileLayer(PydanticBaseSettingsSource):
    """The YAML file's values (set by :meth:`RootSettings.load` for the one model it builds)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_LAYER.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_LAYER.get() or {})


class _EnvLayer(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (``os.environ`` unless a test passes one)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class RootSettings(BaseSettings):
    """A whole configuration (``serve``, ``agent``, ``train``). Subclasses set ``env_prefix`` in their
    ``model_config`` and may map older, shorter environment variables in ``legacy_env`` (``{"MASKWATCH_DB":
    ("server", "db")}``), which count as environment values."""

    model_config = SettingsConfigDict(
        extra="forbid", validate_assignment=True, env_nested_delimiter="__", case_sensitive=False
    )
    legacy_env: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # first wins: flags (init arguments), then the environment, then the YAML file, then the defaults
        return init_settings, _EnvLayer(settings_cls), _FileLayer(settings_cls)

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix") or "")

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Self:
        """Defaults, then ``path`` (YAML), then ``env`` (``os.environ``), then ``overrides`` (nested dicts,
        e.g. ``{"server": {"port": 8001}}``; None values mean "not given"). Raises :class:`ConfigError`."""
        from maskwatch.core.errors import ConfigError

        data = {} if path is None else read_yaml(path)
        check_keys(data, cls)
        environ = dict(os.environ) if env is None else dict(env)
        legacy: dict[str, Any] = {}
        for name, where in cls.legacy_env.items():
            if environ.get(name):
                node = legacy
                for key in where[:-1]:
                    node = node.setdefault(key, {})
                node[where[-1]] = environ[name]
        data = merge(data, legacy)
        cls.check_environment(environ)
        flags = drop_none(overrides or {})
        check_keys(flags, cls)
        file_token, env_token = _FILE_LAYER.set(data), _ENVIRON.set(environ)
        try:
            return cls(**flags)
        except ValidationError as exc:
            raise ConfigError(f"invalid {cls.__name__} settings: {describe(exc)}") from exc
        finally:
            _FILE_LAYER.reset(file_token)
            _ENVIRON.reset(env_token)

    @classmethod
    def check_environment(cls, environ: Mapping[str, str]) -> None:
        """A prefixed variable that names no setting is an error with a hint (a typo would be ignored)."""
        from maskwatch.core.errors import ConfigError

        prefix = cls.env_prefix().lower()
        if not prefix:
            return
        for name in environ:
            if not name.lower().startswith(prefix):
                continue
            keys = name[len(prefix) :].lower().split("__")
            nested: dict[str, Any] = {}
            node = nested
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = None
            try:
                check_keys(nested, cls)
            except ConfigError as exc:
                raise ConfigError(f"environment variable {name}: {exc}") from None
