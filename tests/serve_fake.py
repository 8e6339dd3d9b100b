"""``maskwatch serve`` as a real process on the fake models and fake cameras of the service tests (fast to
start, people on cue): the same settings loading, app, uvicorn server and signal handling as the command.

    python tests/serve_fake.py --config serve.yaml --data-dir DIR --db URL --port PORT

Cameras named ``rtsp://fake/NAME`` are :class:`conftest_service.NoisyCamera` (a person every 2 s). The admin
token is :data:`conftest_service.ADMIN`. Used by the multi-process tests (SIGKILL, SIGSTOP, several workers).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mqtt")
    parser.add_argument("--mqtt-id")
    args = parser.parse_args()

    import uvicorn
    from conftest_service import ADMIN, fake_cameras
    from fakes import fake_detector

    from maskwatch.commands.common import exit_process
    from maskwatch.commands.serve import _server_class
    from maskwatch.service.app import create_app
    from maskwatch.service.core import FleetLink
    from maskwatch.service.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(
        args.config,
        overrides={
            "server": {"data_dir": str(args.data_dir), "db": args.db, "port": args.port},
            "demo": {"enabled": False},
        },
    )
    fleet = FleetLink(args.mqtt, client_id=args.mqtt_id) if args.mqtt else None
    app = create_app(settings, detector=fake_detector(), capture_factory=fake_cameras(), admin_token=ADMIN, fleet=fleet)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    server = _server_class()(config)
    server.run()
    exit_process(0 if getattr(server, "started", False) else 1)  # as `maskwatch serve` ends (cli.main)


if __name__ == "__main__":
    main()
