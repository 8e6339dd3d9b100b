"""One settings model: the same layers (defaults < YAML < environment < flags) and the same errors for every
configuration (serve, agent, train)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskwatch.core.errors import ConfigError
from maskwatch.service.settings import ServiceSettings


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("engine:\n  stats_interval: 30\n  classify_every: 2\nretention:\n  events_days: 10\n")
    env = {"MASKWATCH_SERVE_ENGINE__STATS_INTERVAL": "20", "MASKWATCH_SERVE_RETENTION__AUDIT_DAYS": "99"}
    s = ServiceSettings.load(path, env=env, overrides={"engine": {"classify_every": 7, "stats_interval": None}})
    assert s.engine.stats_interval == 20  # the environment beats the file
    assert s.engine.classify_every == 7  # a flag beats both
    assert s.retention.events_days == 10 and s.retention.audit_days == 99  # nested keys merge, not replace
    assert ServiceSettings.load(env={}).engine.stats_interval == 60  # the default


def test_environment_lists_are_json_and_prefix_is_case_insensitive() -> None:
    env = {"maskwatch_serve_jobs__allowed_dirs": '["/data/a", "/data/b"]'}
    assert ServiceSettings.load(env=env).jobs.allowed_dirs == ["/data/a", "/data/b"]


def test_short_legacy_variables_still_work(tmp_path: Path) -> None:
    s = ServiceSettings.load(env={"MASKWATCH_DB": "sqlite:///x.db", "MASKWATCH_DATA_DIR": str(tmp_path)})
    assert s.server.db == "sqlite:///x.db" and s.data_dir == tmp_path


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({"MASKWATCH_SERVE_ENGINE__STATS_INTERVALL": "5"}, "stats_interval"),
        ({"MASKWATCH_SERVE_RETENTON__EVENTS_DAYS": "5"}, "retention"),
    ],
)
def test_a_mistyped_environment_variable_is_an_error_with_a_hint(env: dict[str, str], hint: str) -> None:
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        ServiceSettings.load(env=env)


def test_bad_values_name_their_path_whatever_the_layer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine\.stats_interval"):
        ServiceSettings.load(env={"MASKWATCH_SERVE_ENGINE__STATS_INTERVAL": "-1"})
    with pytest.raises(ConfigError, match=r"engine\.stats_interval"):
        ServiceSettings.load(env={}, overrides={"engine": {"stats_interval": "soon"}})
    path = tmp_path / "serve.yaml"
    path.write_text("engine:\n  stats_intervl: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'stats_interval'"):
        ServiceSettings.load(path, env={})


def test_the_engine_block_is_one_model_shared_by_detect_serve_and_agent(tmp_path: Path) -> None:
    """One `engine:` block (maskwatch.stream.EngineConfig) reads the same in serve, agent and detect
    settings, and a camera's own settings inherit the engine's camera defaults."""
    from maskwatch.fleet.agent import AgentConfig
    from maskwatch.stream.config import CameraSettings, DetectSettings, EngineConfig

    block = "engine:\n  stats_interval: 15\n  classify_every: 2\n  camera_defaults:\n    target_fps: 4\n"
    path = tmp_path / "x.yaml"
    path.write_text(block)
    engines = [cls.load(path, env={}).engine for cls in (ServiceSettings, AgentConfig, DetectSettings)]
    assert all(type(e) is EngineConfig for e in engines)
    assert {(e.stats_interval, e.classify_every, e.camera_defaults.target_fps) for e in engines} == {(15, 2, 4)}
    spec = engines[0].source("rtsp://cam/1", "door", CameraSettings(realtime=True))
    assert (spec.target_fps, spec.realtime, spec.track) == (4, True, True)  # inherited, own, default
    env = {"MASKWATCH_AGENT_ENGINE__CAMERA_DEFAULTS__LOOP": "true", "MASKWATCH_DETECT_ENGINE__STATS_INTERVAL": "7"}
    assert AgentConfig.load(env=env).engine.camera_defaults.loop is True
    assert DetectSettings.load(env=env).engine.stats_interval == 7
    with pytest.raises(ConfigError, match="did you mean 'stats_interval'"):
        DetectSettings.load(env={"MASKWATCH_DETECT_ENGINE__STATS_INTERVL": "7"})


def test_serve_privacy_decides_the_engine_snapshots() -> None:
    s = ServiceSettings.load(env={}, overrides={"privacy": {"snapshots": True, "blur_faces": True}})
    assert s.engine.snapshots is True and s.engine.snapshot_blur is True
    assert ServiceSettings.load(env={}).engine.snapshots is False  # privacy by default
