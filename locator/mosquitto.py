"""A local Mosquitto with the project's delivery limits, for tests and benchmarks.

The limits are the ones of ``deploy/mosquitto/mosquitto.conf`` (a test keeps them equal):
QoS 1 batches are acknowledged only once stored, so the in-flight window bounds a batch,
and the queue must hold what arrives while the ingest is restarting or Redis is down.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from locator.core.errors import ConfigError

DELIVERY_LIMITS = {
    "max_inflight_messages": "400",
    "max_queued_messages": "100000",
    "max_queued_bytes": "67108864",
    "queue_qos0_messages": "false",
    "persistent_client_expiration": "1d",
}


def _let_mosquitto_write(data_dir: Path) -> None:
    """Started as root, mosquitto drops to its own user: it must own its persistence dir,
    or it silently keeps sessions in memory only."""
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    os.chown(data_dir, account.pw_uid, account.pw_gid)


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class LocalMosquitto:
    """Mosquitto on a loopback port, anonymous, persistence in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise ConfigError("mosquitto is not installed (Debian package `mosquitto`)")
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "log_dest none",
            *(f"{key} {value}" for key, value in DELIVERY_LIMITS.items()),
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        _let_mosquitto_write(self.data_dir)
        self.process = subprocess.Popen(  # noqa: S603 - the system's mosquitto, our config
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
