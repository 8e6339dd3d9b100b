"""``maskwatch serve``: the monitoring service (API, storage, alerts, live dashboard) on uvicorn."""

from __future__ import annotations

import contextlib
import os
import sys
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


def _show_admin_token(token: str, path: Path) -> None:
    """The first start's admin token: on a terminal only (never into a log file or a journal); the file
    ``path`` (mode 600) holds it either way."""
    if sys.stdout.isatty():
        console.print(f"first start: admin token {token} (also in {path}, mode 600; make more under Settings)")
    else:
        console.print(f"first start: an admin token was written to {path} (mode 600)")


def _warn_listed_secrets(args: list[str]) -> None:
    """Warn when a password was given as a flag (visible to every user in ``ps``)."""
    from urllib.parse import urlsplit

    from maskwatch.commands.common import log

    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        try:
            password = urlsplit(value).password if "://" in value else None
        except ValueError:
            password = None
        if password:
            log.warning(
                "a password was given on the command line, where every user sees it (ps); use $MASKWATCH_DB / "
                "$MASKWATCH_DB_FILE, $MASKWATCH_MQTT_PASSWORD / $MASKWATCH_MQTT_PASSWORD_FILE instead"
            )
            return


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
        help="Database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB. With a password, prefer "
        "$MASKWATCH_DB or $MASKWATCH_DB_FILE (a flag is visible in every process listing).",
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
        help="Ingest the fleet's edge agents from this broker: mqtt://USER@HOST:PORT (mqtts:// for TLS), "
        "the password in $MASKWATCH_MQTT_PASSWORD or a file named by $MASKWATCH_MQTT_PASSWORD_FILE (never in "
        "the URL: a flag is visible in every process listing); see docs/deploy.md.",
        envvar="MASKWATCH_MQTT",
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
    from maskwatch.core.credentials import env_secret

    try:
        if db is None and not os.environ.get("MASKWATCH_DB"):
            db = env_secret("MASKWATCH_DB")  # $MASKWATCH_DB_FILE: the URL in a file
        mqtt_password = env_secret("MASKWATCH_MQTT_PASSWORD")
    except ValueError as exc:
        fail(str(exc))
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

        # every credential hidden: passwords in URLs, password=/token= values, webhook URLs and secrets
        typer.echo(yaml.safe_dump(settings.redacted(), sort_keys=False))
        return
    _warn_listed_secrets(sys.argv[1:])
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
        fleet = FleetLink(mqtt, client_id=mqtt_id, password=mqtt_password)
    m = settings.model
    detector = load_mask_detector(m.infer_preset, model=m.path, backend=m.backend, threads=m.threads)
    try:
        app = create_app(settings, detector=detector, fleet=fleet, on_admin_token=_show_admin_token)
    except ValueError as exc:  # a preset admin token that is too weak
        fail(str(exc))
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
