"""``maskwatch serve``: the monitoring service (API, storage, alerts, live dashboard) on uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from maskwatch.commands.common import console, fail, load_mask_detector, require_extra, setup_logging


def _server_class() -> type:
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15); a service stopped on
        purpose should exit 0, so the signals only ask it to stop."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def stop(_signum: int, _frame: object) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        "-c",
        help="Service settings (YAML; see configs/serve.yaml).",
        show_default="built-in defaults",
    ),
    db: Optional[str] = typer.Option(
        None,
        "--db",
        help="Database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB ($MASKWATCH_DB).",
        show_default="sqlite in the data dir",
    ),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address.", show_default="127.0.0.1"),
    port: Optional[int] = typer.Option(None, "--port", help="TCP port.", show_default="8000"),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="SQLite database, snapshots, job uploads.", show_default="runs/serve"
    ),
    demo: Optional[bool] = typer.Option(
        None,
        "--demo/--no-demo",
        help="Add the demo camera (the shared scene images played as a slow slideshow).",
        show_default="when ../shared/data/scenes exists",
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier (.pt / .onnx).", show_default="bundled"),
    check: bool = typer.Option(False, "--check", help="Validate the settings, print them (secrets hidden) and exit."),
    mqtt: Optional[str] = typer.Option(
        None,
        "--mqtt",
        help="Ingest the fleet's edge agents from this broker: "
        "mqtt://USER:PASS@HOST:PORT (mqtts:// for TLS); see docs/deploy.md.",
    ),
    mqtt_id: Optional[str] = typer.Option(
        None,
        "--mqtt-id",
        help="MQTT client id of this ingest worker (stable: its session keeps what it has not stored).",
        show_default="maskwatch-ingest-HOST",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the monitoring service: REST API under /api/v1 (OpenAPI at /docs), a live dashboard at /, cameras
    kept in the database and resumed at start, alerts, Prometheus metrics. SIGTERM or Ctrl-C stops it
    gracefully (open tracks end, the last stats buckets are stored)."""
    require_extra(["fastapi", "uvicorn", "sqlalchemy", "alembic"], "maskwatch serve", extra="serve")
    from maskwatch.core.errors import ConfigError
    from maskwatch.service.settings import load_settings

    setup_logging(verbose)
    overrides = {
        "server": {"db": db, "host": host, "port": port, "data_dir": None if data_dir is None else str(data_dir)},
        "demo": {"enabled": demo},
        "model": {"path": None if model is None else str(model)},
    }
    try:
        settings = load_settings(config, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc))
    if check:
        import yaml

        from maskwatch.core.redaction import REDACTED, redact

        data = settings.model_dump()
        for rule in data["alerts"]["rules"]:
            if rule.get("webhook_secret"):
                rule["webhook_secret"] = REDACTED
        if data["auth"].get("scrape_token"):
            data["auth"]["scrape_token"] = REDACTED
        # every credential in a URL (database, cameras, webhooks) or a password=/token= value is hidden
        typer.echo(redact(yaml.safe_dump(data, sort_keys=False)))
        return
    import uvicorn

    from maskwatch.service.app import create_app
    from maskwatch.service.core import FleetLink

    fleet = None
    if mqtt:
        from maskwatch.fleet.ingest import parse_ingest_url

        try:
            parse_ingest_url(mqtt)
        except ValueError as exc:
            fail(str(exc))
        fleet = FleetLink(mqtt, client_id=mqtt_id)
    m = settings.model
    detector = load_mask_detector(m.infer_preset, model=m.path, backend=m.backend, threads=m.threads)
    app = create_app(settings, detector=detector, fleet=fleet)
    server_class = _server_class()
    url = f"http://{settings.server.host}:{settings.server.port}/"
    # one line each, never wrapped: a URL cut across lines cannot be copied or clicked
    for line in (
        "maskwatch serve",
        f"  dashboard  {url}",
        f"  API        {url}api/v1  (OpenAPI: {url}docs)",
        f"  probes     {url}healthz  {url}readyz  {url}metrics",
        f"  data       {settings.data_dir}",
    ):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    server = server_class(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_level=settings.server.log_level,
            timeout_graceful_shutdown=5,
            access_log=False,
        )
    )
    with contextlib.suppress(SystemExit):  # uvicorn exits 3 when it cannot start (a port in use): we say 1
        server.run()
    if getattr(server, "started", False) is False:
        fail(f"the service did not start (is port {settings.server.port} free?)", code=1)
