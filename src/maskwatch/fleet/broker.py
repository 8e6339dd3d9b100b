"""A throwaway Mosquitto broker for tests and benchmarks: Debian's ``mosquitto`` on 127.0.0.1, a free port,
a password file (``mosquitto_passwd -b -c``), ``allow_anonymous false``, an ACL per user (plus ``pattern``
lines for every user, as docs/deploy.md writes them), persistence in its folder (so a stopped and restarted
broker keeps queued messages; ``autosave_interval`` as docs/deploy.md says, 60 s, makes a killed one lose
what it held since its last save), start/stop/kill/pause/resume."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["MosquittoBroker", "find_mosquitto", "free_port"]


def find_mosquitto() -> tuple[str, str] | None:
    """Paths of ``mosquitto`` and ``mosquitto_passwd``, or None when not installed."""
    broker = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    passwd = shutil.which("mosquitto_passwd")
    return (broker, passwd) if broker and passwd else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """``users``: name -> password; ``acl``: name -> list of ``(access, pattern)`` lines (``topic readwrite
    maskwatch/#``); users without an ACL entry get read/write on ``maskwatch/#``; ``patterns``: ACL lines for
    every user (``pattern write maskwatch/%u/#``), after the users'."""

    def __init__(self, folder: Path, users: dict[str, str], *, acl: dict[str, list[str]] | None = None,
                 port: int | None = None, tls: tuple[str, str, str] | None = None, autosave_interval: int = 1,
                 patterns: list[str] | None = None) -> None:  # fmt: skip
        found = find_mosquitto()
        if found is None:
            raise FileNotFoundError("mosquitto not installed (apt-get install mosquitto mosquitto-clients)")
        self.binary, passwd = found
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = users
        self.tls = tls  # (CA file, certificate, key): a TLS listener
        pwfile = self.folder / "passwd"
        for i, (user, password) in enumerate(users.items()):
            args = [passwd, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password]
            subprocess.run(args, check=True, capture_output=True)
        acl_lines = []
        for user in users:
            acl_lines.append(f"user {user}")
            acl_lines.extend((acl or {}).get(user, ["topic readwrite maskwatch/#"]))
            acl_lines.append("")
        acl_lines.extend(patterns or [])
        (self.folder / "acl").write_text("\n".join(acl_lines))
        os.chmod(pwfile, 0o600)
        os.chmod(self.folder / "acl", 0o600)
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text(
            ""
            # as root mosquitto would drop to the "mosquitto" user, which cannot read this folder
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n"
            + (f"cafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n" if tls else "")
            + "allow_anonymous false\n"
            f"password_file {pwfile}\n"
            f"acl_file {self.folder / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            f"autosave_interval {autosave_interval}\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 1000000\n"
            "max_packet_size 1048576\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None) -> str:
        user = user or next(iter(self.users))
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.folder / "mosquitto.log", "ab")  # noqa: SIM115 (kept by the process)
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash (what it held since its last autosave is gone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: a network cut as the clients see it (connections open, nothing answered)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
