"""``maskwatch agent``: an edge node publishing its cameras' events to the control room over MQTT."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from maskwatch.commands.common import console, fail, require_extra, setup_logging


def load_agent_config(path: Path | None, overrides: dict[str, Any]) -> Any:
    """``AgentConfig`` in the one settings model's layers: defaults, the YAML file, ``MASKWATCH_AGENT_*``
    environment, then the given (non-None) flags; a bad file, key or value is a one-line error (exit 2)."""
    from maskwatch.core.errors import ConfigError
    from maskwatch.fleet.agent import AgentConfig

    flags = dict(overrides)
    engine: dict[str, Any] = {"stats_interval": flags.pop("stats_interval", None)}
    engine["camera_defaults"] = {"realtime": flags.pop("realtime", None)}
    flags["engine"] = engine
    flags["cameras"] = {name: {"url": source} for name, source in (flags.pop("cameras", None) or {}).items()}
    try:
        return AgentConfig.load(path, overrides=flags)
    except ConfigError as exc:
        fail(str(exc))


def agent(
    camera: Optional[list[str]] = typer.Option(
        None,
        "--camera",
        help="NAME=SOURCE (a video file, a folder of images, rtsp://..., webcam:N); repeat for each camera.",
    ),
    broker: Optional[str] = typer.Option(
        None, "--broker", help="mqtt://USER:PASS@HOST:PORT, or mqtts:// for TLS.", show_default="mqtt://127.0.0.1:1883"
    ),
    node: Optional[str] = typer.Option(
        None, "--node", help="This node's name (one MQTT topic level).", show_default="the host name"
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Agent settings (YAML; see configs/agent.yaml)."
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Where the outbox (outbox.db) lives.", show_default="runs/agent"
    ),
    username: Optional[str] = typer.Option(None, "--username", help="Broker user (overrides the URL's)."),
    password: Optional[str] = typer.Option(
        None,
        "--password",
        help="Broker password (overrides the URL's). A flag is visible in every process listing: prefer "
        "$MASKWATCH_MQTT_PASSWORD, a file named by $MASKWATCH_MQTT_PASSWORD_FILE, or the config file.",
        envvar="MASKWATCH_MQTT_PASSWORD",
    ),
    tls_ca: Optional[str] = typer.Option(None, "--tls-ca", help="CA bundle to verify the broker (turns TLS on)."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="Client certificate (PEM)."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Client certificate key (PEM)."),
    tls_insecure: Optional[bool] = typer.Option(
        None, "--tls-insecure", help="Skip the broker host name check (tests)."
    ),
    outbox_mb: Optional[float] = typer.Option(
        None, "--outbox-mb", help="Outbox disk budget; when full the oldest stats go first.", show_default="256"
    ),
    stats_interval: Optional[float] = typer.Option(
        None, "--stats-interval", help="Seconds per stats bucket.", show_default="60"
    ),
    realtime: Optional[bool] = typer.Option(
        None,
        "--realtime/--as-fast",
        help="Play video files at their frame rate (a recorded camera) or as fast as possible.",
        show_default="as fast",
    ),
    snapshots: Optional[bool] = typer.Option(
        None,
        "--snapshots/--no-snapshots",
        help="Answer snapshot commands (every face blurred). Off: no image leaves the node.",
        show_default="off",
    ),
    model: Optional[str] = typer.Option(None, "--model", help="Classifier (.pt / .onnx).", show_default="bundled"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run an edge node: analyse the cameras with the stream engine and publish every event to the broker
    (maskwatch/NODE/CAMERA/...) through a durable outbox on disk, so an outage loses nothing: a message
    leaves the outbox only when the control room says it has stored it. When every camera is a file, exits
    once the control room has acknowledged the last event (exit 1 if the broker refuses the login); a
    restarted agent resumes a file where it stopped. SIGTERM stops it (what is not acknowledged stays in the
    outbox for the next start)."""
    require_extra(["paho.mqtt", "edgefirst.tracker"], "maskwatch agent", extra="edge")
    import signal

    from maskwatch.fleet.agent import Agent, parse_camera

    setup_logging(verbose)
    try:
        cameras = dict(parse_camera(text) for text in camera or [])
    except ValueError as exc:
        fail(str(exc))
    overrides: dict[str, Any] = {
        "broker": broker,
        "node": node,
        "data_dir": None if data_dir is None else str(data_dir),
        "username": username,
        "password": password,
        "tls_ca": tls_ca,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_insecure": tls_insecure,
        "outbox_mb": outbox_mb,
        "stats_interval": stats_interval,
        "realtime": realtime,
        "snapshots": snapshots,
        "model": model,
        "cameras": cameras,
    }
    settings = load_agent_config(config, overrides)
    if settings.password is None:  # $MASKWATCH_MQTT_PASSWORD_FILE: the password in a file (never a flag)
        from maskwatch.core.credentials import env_secret

        try:
            settings.password = env_secret("MASKWATCH_MQTT_PASSWORD")
        except ValueError as exc:
            fail(str(exc))
    try:
        settings.broker_url()
        from maskwatch.core.names import check_name

        check_name(settings.node, "node name")
    except ValueError as exc:
        fail(str(exc))
    if not settings.cameras:
        fail("no camera: give --camera NAME=SOURCE (or cameras: in --config)")
    pairs = settings.camera_sources()
    from maskwatch.fleet.agent import LoginRefusedError, check_sources

    try:
        check_sources(pairs)  # before any work: a missing file is a usage error (2), not a failed run
    except ValueError as exc:
        fail(str(exc))
    from maskwatch.stream import StreamEngine

    engine = StreamEngine.load(settings.model, config=settings.engine, stop_when_done=Agent.all_files(pairs))
    node_agent = Agent(settings, engine)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: node_agent.stop())
    console.print(
        f"maskwatch agent: node {settings.node}, {len(pairs)} camera(s), broker {settings.broker_url()}, "
        f"outbox {Path(settings.data_dir) / 'outbox.db'}"
    )
    try:
        left = node_agent.run(pairs)
    except LoginRefusedError as exc:
        fail(str(exc), code=1)
    if left:
        console.print(f"{left} message(s) not yet acknowledged stay in the outbox for the next start")
