"""The one CLI for every Homeward process: `homeward run | api | ingest | ticker | ...`."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import redis
import typer

from alerts.incidents.config import config_from
from alerts.responders.service import volunteer_exists
from locator import embedded, processes
from locator.core import keys, shards
from locator.core.auth import Principal, Role, create_token, revoke_token
from locator.core.clock import SystemClock
from locator.core.errors import ConfigError, HomewardError, Unprocessable
from locator.core.logging import configure_logging, get_logger
from locator.core.redis import async_client, check_layout, sync_client
from locator.core.settings import Settings, get_settings
from locator.gateway.server import Gateway
from locator.ingest_loop import WORKERS as INGEST_WORKERS
from locator.ingest_loop import IngestLoop
from locator.ticker import run_ticker

# Plain click help: flags read as flags (rich's boxes printed `--help <bool>`) and wrap
# at the terminal's width.
_TYPER = {"rich_markup_mode": None, "no_args_is_help": True}
app = typer.Typer(
    help="Homeward: elderly wandering alert and locator service.",
    add_completion=False,
    pretty_exceptions_enable=False,
    **_TYPER,  # type: ignore[arg-type]
)
token_app = typer.Typer(help="Bearer tokens for the HTTP API.", **_TYPER)  # type: ignore[arg-type]
app.add_typer(token_app, name="token")
bench_app = typer.Typer(
    help="Benchmarks that measure ours against a baseline in one run, on loopback.",
    **_TYPER,  # type: ignore[arg-type]
)
app.add_typer(bench_app, name="bench")
log = get_logger("homeward.cli")


class RoleChoice(StrEnum):
    admin = "admin"
    dispatcher = "dispatcher"
    guardian = "guardian"
    volunteer = "volunteer"


class SimProtocol(StrEnum):
    native = "native"
    owntracks = "owntracks"
    gt06 = "gt06"
    jt808 = "jt808"
    watch = "watch"
    h02 = "h02"


class ProcessChoice(StrEnum):
    ingest = "ingest"
    ticker = "ticker"
    alerts = "alerts"
    delivery = "delivery"


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level)
    shards.configure(settings.shards)
    return settings


DEMO_DATA_DIR = Path(".homeward-demo")


def _command_settings() -> Settings:
    """Settings for a command that talks to a service: the data dir of the one running here.

    With `make run` going, `homeward token create` must find the demo's store
    (.homeward-demo) without the user knowing it exists; HOMEWARD_DATA_DIR always wins.
    """
    settings = _settings()
    if "HOMEWARD_DATA_DIR" in os.environ:
        return settings
    default = settings.data_dir
    live = [d for d in (default, DEMO_DATA_DIR) if embedded.read_runtime(d) is not None]
    if live:
        chosen = live[0]
    elif not default.exists() and DEMO_DATA_DIR.exists():
        chosen = DEMO_DATA_DIR
    else:
        chosen = default
    if chosen != default:
        print(
            f"homeward: using the demo's data dir {chosen}/ (set HOMEWARD_DATA_DIR to choose)",
            file=sys.stderr,
        )
    return settings.model_copy(update={"data_dir": chosen})


def _resolve_urls(settings: Settings) -> tuple[str | None, str | None]:
    """URLs from the environment, else from what a live `homeward run` wrote."""
    runtime = embedded.read_runtime(settings.data_dir)
    redis_url = settings.redis_url or (runtime.redis_url if runtime else None)
    mqtt_url = settings.mqtt_url or (runtime.mqtt_url if runtime else None)
    return redis_url, mqtt_url


def _require_urls(settings: Settings, *, mqtt: bool) -> tuple[str, str | None]:
    """The Redis (and broker) a long-running command needs, or one clear line."""
    redis_url, mqtt_url = _resolve_urls(settings)
    if not redis_url or (mqtt and not mqtt_url):
        needed = "HOMEWARD_REDIS_URL and HOMEWARD_MQTT_URL" if mqtt else "HOMEWARD_REDIS_URL"
        raise ConfigError(f"set {needed} (or start `homeward run` on this data dir)")
    return redis_url, mqtt_url


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, for loops that finish their batch and exit."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@contextmanager
def _redis_url_for_command(settings: Settings) -> Iterator[str]:
    """A Redis for a one-shot command: configured, a live run's, or the data dir's own, briefly."""
    redis_url, _ = _resolve_urls(settings)
    if redis_url:
        yield redis_url
        return
    lock = embedded.DataDirLock(settings.data_dir)
    lock.acquire()
    server = embedded.EmbeddedRedis(settings.data_dir)
    try:
        yield server.start()
    finally:
        server.stop()
        lock.release()


def _require_port(host: str, port: int) -> None:
    """Fail before starting anything if the API could not listen where configured."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            raise ConfigError(f"HOMEWARD_HTTP_HOST {host!r} does not resolve") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"HTTP port {host}:{port} is in use; set HOMEWARD_HTTP_PORT to a free port"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _bootstrap_admin(redis_url: str, ttl_s: int, *, cluster: bool) -> str | None:
    """On the very first start of a data store, mint an admin token (printed once)."""
    redis = async_client(redis_url, process="bootstrap", cluster=cluster)
    try:
        if not await redis.set(keys.BOOTSTRAP_ADMIN, str(time.time()), nx=True):
            return None
        token, _ = await create_token(
            redis, role=Role.ADMIN, subject="bootstrap", created_at=time.time(), ttl_s=ttl_s
        )
        return token
    finally:
        await redis.aclose()


def _serve_http(
    settings: Settings,
    *,
    redis_url: str,
    mqtt_url: str | None,
    local_loops: tuple[str, ...] = (),
) -> None:
    import uvicorn

    from locator.app import create_app

    api = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, local_loops=local_loops)
    config = uvicorn.Config(
        api, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
    )
    uvicorn.Server(config).run()


def _masked(url: str) -> str:
    """A URL fit for a terminal: the password stays in DATA_DIR/runtime.json (0600)."""
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def _http_url(settings: Settings) -> str:
    return f"http://{settings.http_host}:{settings.http_port}"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def run() -> None:
    """API + ingest + ticker in one process, on an embedded Redis and broker unless URLs are set."""
    _run(_settings())


@app.command()
def demo(
    elders: Annotated[int, typer.Option(help="Elders in the simulated district.")] = 24,
    first_after: Annotated[float, typer.Option(help="Seconds before the first wander.")] = 20.0,
    every: Annotated[float, typer.Option(help="Seconds between two wanders.")] = 180.0,
    volunteers_act: Annotated[
        bool, typer.Option(help="Simulated volunteers accept, ride over and find her.")
    ] = True,
) -> None:
    """`run` plus a simulated district around Xishan, in its own data dir (.homeward-demo).

    The terminal shows the links to log in with and one line per incident change; the
    full log goes to DATA_DIR/homeward.log.
    """
    settings = _settings()
    if "HOMEWARD_DATA_DIR" not in os.environ:
        settings = settings.model_copy(update={"data_dir": DEMO_DATA_DIR})
    log_file = settings.data_dir / "homeward.log"
    configure_logging(settings.log_level, file=log_file, console_level="error")

    def start(redis_url: str, mqtt_url: str, stop: threading.Event) -> threading.Thread:
        from locator.demo import DemoDistrict

        district = DemoDistrict(
            base_url=_http_url(settings),
            mqtt_url=mqtt_url,
            redis_url=redis_url,
            data_dir=settings.data_dir,
            elders=elders,
            first_after_s=first_after,
            every_s=every,
            volunteers_act=volunteers_act,
        )
        return threading.Thread(target=district.run, args=(stop,), name="demo", daemon=True)

    def up(summary: str) -> None:
        print(f"{summary}\nLogs: {log_file.resolve()}   (Ctrl-C stops everything)", flush=True)

    _run(settings, extra=start, on_up=up)


class StartupFailed(ConfigError):
    """Start-up could not finish; everything it had started is stopped again."""


def _run(
    settings: Settings,
    *,
    extra: Callable[[str, str, threading.Event], threading.Thread] | None = None,
    on_up: Callable[[str], None] | None = None,
) -> None:
    # uvicorn re-raises the SIGTERM it caught once it has drained; turning it into SystemExit
    # lets the finally below stop the embedded servers and remove runtime.json.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = embedded.DataDirLock(settings.data_dir)
    lock.acquire()
    redis_server: embedded.EmbeddedRedis | None = None
    broker: embedded.EmbeddedBroker | None = None
    stop = threading.Event()
    workers: list[threading.Thread] = []
    step = "checking the HTTP port"
    try:
        _refuse_shared_on_embedded(settings, embedded_broker=settings.mqtt_url is None)
        _require_port(settings.http_host, settings.http_port)
        redis_url = settings.redis_url
        if redis_url is None:
            step = "starting the embedded Redis"
            redis_server = embedded.EmbeddedRedis(settings.data_dir)
            redis_url = redis_server.start()
            log.info("embedded_redis_started", url=_masked(redis_url), dir=str(redis_server.dir))
        step = "checking the store's shard layout"
        _check_layout(settings, redis_url)
        step = "minting the first admin token"
        # Printed before anything else can fail: it is shown only once.
        admin_token = asyncio.run(
            _bootstrap_admin(redis_url, settings.token_ttl_s, cluster=settings.redis_cluster)
        )
        if admin_token:
            print(f"Admin token (shown once, keep it): {admin_token}", flush=True)
        mqtt_url = settings.mqtt_url
        if mqtt_url is None:
            step = "starting the embedded MQTT broker"
            broker = embedded.EmbeddedBroker()
            port, fell_back = broker.choose_port(embedded.remembered_mqtt_port(settings.data_dir))
            broker.port = port
            mqtt_url = broker.start()
            if fell_back:
                embedded.remember_mqtt_port(settings.data_dir, port)
                embedded.announce(
                    f"port {embedded.PREFERRED_MQTT_PORT} is taken: the embedded MQTT broker "
                    f"listens on {mqtt_url} (bracelets and `homeward simulate` must use it)"
                )
            log.info("embedded_mqtt_started", url=_masked(mqtt_url))
        step = "starting the gateway"
        gateway = _start_gateway(settings, redis_url=redis_url, mqtt_url=mqtt_url, stop=stop)
        workers.append(gateway)
        step = "writing runtime.json"
        embedded.write_runtime(
            settings.data_dir,
            embedded.Runtime(
                pid=os.getpid(),
                redis_url=redis_url,
                mqtt_url=mqtt_url,
                http_url=_http_url(settings),
                embedded_redis=redis_server is not None,
                embedded_mqtt=broker is not None,
                started_at=time.time(),
                gateway=gateway.ports,
            ),
        )
        step = "starting the ingest, ticker and alerts loops"
        ingest_loop = _ingest_loop(settings, redis_url=redis_url, mqtt_url=mqtt_url)
        workers.append(threading.Thread(target=ingest_loop.run, args=(stop,), name="ingest"))
        workers.append(
            threading.Thread(
                target=run_ticker,
                kwargs={
                    "redis_url": redis_url,
                    "clock": SystemClock(),
                    "offline_after_s": settings.offline_after_s,
                    "data_dir": settings.data_dir,
                    "stop": stop,
                    "mqtt_url": mqtt_url,
                    "alerts": config_from(settings, clock=SystemClock(), mqtt_url=mqtt_url),
                    "cluster": settings.redis_cluster,
                },
                name="ticker",
            )
        )
        if extra is not None:
            step = "starting the demo district"
            workers.append(extra(redis_url, mqtt_url, stop))
        for thread in workers:
            if thread.ident is None:  # the gateway's thread is already running
                thread.daemon = True
                thread.start()
        (on_up or _announce_up)(
            f"Homeward is running at {_http_url(settings)}  (API docs: {_http_url(settings)}/docs)"
            f"\nRedis {_masked(redis_url)}   MQTT {_masked(mqtt_url)}   "
            f"data {settings.data_dir.resolve()}"
        )
        step = "serving HTTP"
        try:
            _serve_http(
                settings,
                redis_url=redis_url,
                mqtt_url=mqtt_url,
                local_loops=("ingest", "ticker", "alerts", "delivery", "relay"),
            )
        except SystemExit as exc:
            if exc.code not in (0, None):  # uvicorn exits 1 when it cannot serve
                raise StartupFailed(
                    f"the HTTP server stopped ({step}); see the log for why"
                ) from None
            raise
    except (HomewardError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        log.exception("startup_failed", step=step)
        what = "the service stopped" if step == "serving HTTP" else "start-up failed"
        raise StartupFailed(
            f"{what} while {step}: {type(exc).__name__}: {exc}. Nothing was left "
            "running; fix the cause and start again (the log has the details)"
        ) from exc
    finally:
        stop.set()
        for thread in workers:
            if thread.ident is not None:  # only threads that were started can be joined
                thread.join(timeout=10)
        if broker is not None:
            broker.stop()
        if redis_server is not None:
            redis_server.stop()
        embedded.runtime_path(settings.data_dir).unlink(missing_ok=True)
        lock.release()


class _GatewayThread(threading.Thread):
    """The gateway's event loop in a thread of `run`, with the ports it listens on."""

    def __init__(self, gateway: Gateway, stop: threading.Event) -> None:
        self.ready = threading.Event()
        super().__init__(target=gateway.run, args=(stop, self.ready), name="gateway", daemon=True)
        self.gateway = gateway

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.gateway.ports)


def _start_gateway(
    settings: Settings, *, redis_url: str, mqtt_url: str, stop: threading.Event
) -> _GatewayThread:
    """Start the gateway beside the API; a taken port falls back to a free one, announced."""
    gateway = Gateway(
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        host=settings.gateway_host,
        ports=settings.gateway_port_map,
        client_id=settings.gateway_client_id,
        fall_back=True,
        cluster=settings.redis_cluster,
    )
    thread = _GatewayThread(gateway, stop)
    thread.start()
    if not thread.ready.wait(15):
        raise StartupFailed("the gateway did not start listening within 15 s")
    if gateway.error is not None:
        if isinstance(gateway.error, HomewardError):
            raise gateway.error
        raise StartupFailed(f"the gateway did not start: {gateway.error}")
    for name, taken in gateway.fell_back.items():
        embedded.announce(
            f"port {taken} is taken: the gateway's {name} server listens on "
            f"{settings.gateway_host}:{gateway.ports[name]} (point {name} bracelets there)"
        )
    log.info("gateway_started", ports=gateway.ports)
    return thread


def _announce_up(summary: str) -> None:
    print(summary, flush=True)


@app.command()
def api() -> None:
    """Only the HTTP API (Redis and broker from HOMEWARD_REDIS_URL / HOMEWARD_MQTT_URL)."""
    settings = _settings()
    redis_url, mqtt_url = _resolve_urls(settings)
    if not redis_url:
        raise ConfigError("set HOMEWARD_REDIS_URL (or start `homeward run` on this data dir)")
    _require_port(settings.http_host, settings.http_port)
    # Here as well as in the lifespan: a wrong store refused in one line, not a uvicorn trace.
    _check_layout(settings, redis_url)
    _serve_http(settings, redis_url=redis_url, mqtt_url=mqtt_url)


def _refuse_shared_on_embedded(settings: Settings, *, embedded_broker: bool) -> None:
    """amqtt grants a $share subscription and then delivers nothing to it: refuse, loudly."""
    if settings.ingest_group and embedded_broker:
        raise ConfigError(
            "HOMEWARD_INGEST_GROUP needs a broker with shared subscriptions (Mosquitto >= 2.0, "
            "EMQX); the embedded amqtt broker has none: set HOMEWARD_MQTT_URL or unset the group"
        )


def _check_layout(settings: Settings, redis_url: str) -> None:
    """Refuse to start on a store written with another HOMEWARD_SHARDS."""
    client = sync_client(redis_url, process="cli", cluster=settings.redis_cluster)
    try:
        check_layout(client)
    finally:
        client.close()


def _ingest_loop(settings: Settings, *, redis_url: str, mqtt_url: str) -> IngestLoop:
    return IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=redis_url,
        data_dir=settings.data_dir,
        clock=SystemClock(),
        retention_s=settings.track_retention_s,
        offline_after_s=settings.offline_after_s,
        timezone=settings.zone,
        client_id=settings.mqtt_client_id,
        group=settings.ingest_group,
        cluster=settings.redis_cluster,
        workers=settings.ingest_workers,
    )


@app.command()
def ingest() -> None:
    """The MQTT ingest loop: decode, validate, filter and store bracelet uplinks."""
    settings = _settings()
    redis_url, mqtt_url = _require_urls(settings, mqtt=True)
    assert mqtt_url is not None
    runtime = embedded.read_runtime(settings.data_dir)
    _refuse_shared_on_embedded(
        settings,
        embedded_broker=settings.mqtt_url is None and runtime is not None and runtime.embedded_mqtt,
    )
    _check_layout(settings, redis_url)
    _ingest_loop(settings, redis_url=redis_url, mqtt_url=mqtt_url).run(_stop_on_signals())


@app.command()
def ticker() -> None:
    """Timers (SLA steps, offline checks) and the alerts worker (incidents, outbox, relay)."""
    settings = _settings()
    redis_url, mqtt_url = _require_urls(settings, mqtt=False)
    _check_layout(settings, redis_url)
    stop = _stop_on_signals()
    run_ticker(
        redis_url,
        clock=SystemClock(),
        offline_after_s=settings.offline_after_s,
        data_dir=settings.data_dir,
        stop=stop,
        mqtt_url=mqtt_url,
        alerts=config_from(settings, clock=SystemClock(), mqtt_url=mqtt_url),
        cluster=settings.redis_cluster,
    )


@app.command()
def gateway() -> None:
    """TCP gateway for GT06, JT/T 808, watch and H02 bracelets (HOMEWARD_GATEWAY_PORTS)."""
    settings = _settings()
    redis_url, mqtt_url = _require_urls(settings, mqtt=True)
    assert mqtt_url is not None
    server = Gateway(
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        host=settings.gateway_host,
        ports=settings.gateway_port_map,
        client_id=settings.gateway_client_id,
        tend_gc=True,
        cluster=settings.redis_cluster,
    )
    stop = _stop_on_signals()
    ready = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop, ready), name="gateway")
    thread.start()
    ready.wait()
    if server.error is not None:
        thread.join()
        raise server.error
    ports = ", ".join(f"{name} {port}" for name, port in server.ports.items())
    print(f"Gateway listening on {settings.gateway_host}: {ports}", flush=True)
    while thread.is_alive():
        thread.join(timeout=0.5)  # short joins: the signal handlers run in this thread


@app.command()
def health(
    process: Annotated[ProcessChoice, typer.Option(help="which loop to check")],
    max_age: Annotated[float, typer.Option(help="seconds since the last heartbeat")] = 30.0,
) -> None:
    """Exit 0 if a loop beat its heartbeat recently (for container health checks)."""
    settings = get_settings()
    heartbeat = processes.read_heartbeat(settings.data_dir, process.value)
    problem = "never started" if heartbeat is None else heartbeat.problem(max_age)
    if problem or heartbeat is None:
        typer.echo(f"{process.value}: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{process.value}: ok ({heartbeat.age_s:.1f} s ago)")


@token_app.command("create")
def token_create(
    role: Annotated[RoleChoice, typer.Option(help="admin | dispatcher | guardian | volunteer")],
    subject: Annotated[
        str | None, typer.Option(help="guardian id, or the volunteer's id for a volunteer token")
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(min=60, help="lifetime in seconds (default HOMEWARD_TOKEN_TTL_S, 90 days)"),
    ] = None,
) -> None:
    """Mint a bearer token that expires and print only the token."""
    settings = _command_settings()

    async def mint(url: str) -> str:
        redis = async_client(url, process="cli", cluster=settings.redis_cluster)
        try:
            token, _ = await create_token(
                redis,
                role=Role(role.value),
                subject=subject,
                created_at=time.time(),
                ttl_s=ttl or settings.token_ttl_s,
                volunteer_exists=lambda vid: volunteer_exists(redis, volunteer_id=vid),
            )
            return token
        finally:
            await redis.aclose()

    with _redis_url_for_command(settings) as url:
        typer.echo(asyncio.run(mint(url)))


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="the token to revoke")]) -> None:
    """Revoke a token (a lost phone's, a volunteer who left)."""
    settings = _command_settings()

    async def revoke(url: str) -> bool:
        redis = async_client(url, process="cli", cluster=settings.redis_cluster)
        try:
            return await revoke_token(redis, token)
        finally:
            await redis.aclose()

    with _redis_url_for_command(settings) as url:
        if not asyncio.run(revoke(url)):
            typer.echo("no such token", err=True)
            raise typer.Exit(1)
    typer.echo("revoked")


@app.command("mqtt-credentials")
def mqtt_credentials_command(
    usernames: Annotated[list[str], typer.Argument(help="bracelet ids or OwnTracks users")],
    owntracks: Annotated[bool, typer.Option(help="the names are OwnTracks {user}s")] = False,
    password: Annotated[bool, typer.Option(help="print `user password`, not passwd lines")] = (
        False
    ),
) -> None:
    """Broker password-file lines for devices (from HOMEWARD_MQTT_DEVICE_SECRET).

    Append the lines to deploy/mosquitto/devices/site.passwd; --password shows what to
    provision on a bracelet (a phone gets its own in the OwnTracks QR code).
    """
    from devices.registry import mqtt_credentials as creds

    secret = get_settings().mqtt_device_secret
    if secret is None or not secret.get_secret_value():
        raise ConfigError("set HOMEWARD_MQTT_DEVICE_SECRET (the one the API has)")
    for name in usernames:
        if not creds.valid_username(name):
            raise typer.BadParameter(f"{name!r}: letters, digits and _ . @ - only, no homeward-")
        kind: creds.Kind = "owntracks" if owntracks else "native"
        secret_ = creds.device_password(secret=secret.get_secret_value(), kind=kind, username=name)
        line = (
            f"{name} {secret_}" if password else creds.passwd_line(username=name, password=secret_)
        )
        typer.echo(line)


@app.command("import")
def import_csv(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="elders.csv")
    ],
) -> None:
    """Register elders and their devices from a CSV file; prints a report per row."""
    from devices import importer

    settings = _command_settings()
    text = file.read_text(encoding="utf-8-sig")

    async def go(url: str) -> importer.ImportReport:
        redis = async_client(url, process="cli", cluster=settings.redis_cluster)
        try:
            admin = Principal(role=Role.ADMIN, subject="cli")
            return await importer.import_csv(redis, caller=admin, text=text, clock=SystemClock())
        finally:
            await redis.aclose()

    with _redis_url_for_command(settings) as url:
        report = asyncio.run(go(url))
    for row in report.rows:
        if row.status == "created":
            typer.echo(
                f"row {row.row}: created elder {row.elder_id}"
                + (f" with device {row.device_id}" if row.device_id else "")
            )
        else:
            problems = "; ".join(f"{e.column}: {e.message}" for e in row.errors)
            typer.echo(f"row {row.row}: error: {problems}")
    typer.echo(f"{report.created} created, {report.failed} failed")
    if report.failed:
        raise typer.Exit(1)


@app.command()
def simulate(
    elders: Annotated[int, typer.Option(help="simulated elders, each with a bracelet")] = 20,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second")] = 60.0,
    interval: Annotated[float, typer.Option(help="base reporting interval, seconds")] = 60.0,
    hours: Annotated[float, typer.Option(help="simulated hours (the day ends now)")] = 24.0,
    wander: Annotated[float, typer.Option(help="fraction of elders who wander once")] = 0.5,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    protocol: Annotated[
        SimProtocol,
        typer.Option(help="native/owntracks over MQTT; the rest over TCP to the gateway"),
    ] = SimProtocol.native,
) -> None:
    """Elders' days around Xishan community (30.51 N, 120.68 E), over MQTT or the gateway.

    Noise: indoor drift 20-80 m (claimed 20-60 m); Wi-Fi fixes (50-120 m) 10% of the time
    indoors; 3 cell-only runs a day (500-2,500 m off, accuracy 800-2,000 m); one-fix GPS
    jumps of 300 m-5 km claiming 10-30 m about twice a day; stale repeats (1%) and
    out-of-order duplicates (0.5%); wandering episodes at 0.8-1.2 m/s, mostly straight,
    out for at least 20 minutes, with their true exit times. Answers reportLocation (a fix
    within 10 s) and setInterval like a bracelet. Uses the Redis and broker of `homeward
    run` (or HOMEWARD_REDIS_URL / HOMEWARD_MQTT_URL) and registers its elders there;
    gt06 (15-digit IMEIs), jt808 (12-digit phones), watch and h02 bracelets connect to the
    gateway ports in that run's runtime.json (else HOMEWARD_GATEWAY_PORTS).
    """
    from locator.simulate import driver

    settings = _command_settings()
    redis_url, mqtt_url = _require_urls(settings, mqtt=True)
    assert mqtt_url is not None
    runtime = embedded.read_runtime(settings.data_dir)
    ports = (runtime.gateway if runtime else None) or settings.gateway_port_map
    stop = _stop_on_signals()
    report = driver.run(
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        elders=elders,
        speed=speed,
        interval_s=interval,
        hours=hours,
        wander_fraction=wander,
        seed=seed,
        stop=stop,
        protocol=protocol.value,
        gateway=(settings.gateway_host, ports),
    )
    typer.echo(driver.describe(report))


@bench_app.command("ingest")
def bench_ingest(
    devices: Annotated[int, typer.Option(help="devices registered")] = 10_000,
    fixes: Annotated[int, typer.Option(help="fixes queued per drain (<= 100000)")] = 50_000,
    publishers: Annotated[int, typer.Option(help="publisher processes filling the queue")] = 4,
    rate: Annotated[float, typer.Option(help="offered fixes/s for the latency run")] = 2000.0,
    seconds: Annotated[float, typer.Option(help="length of the latency run")] = 10.0,
    profile: Annotated[
        Path | None, typer.Option(help="cProfile the ingest's first store worker into this file")
    ] = None,
    zones: Annotated[
        bool, typer.Option(help="a safe circle per elder (the zone stage runs)")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=16, help="the ingest's store worker threads")
    ] = INGEST_WORKERS,
    redis_server: Annotated[
        Path | None,
        typer.Option(
            help="a redis-server binary to store into (default: the embedded 6.2; production "
            "images use jemalloc, the embedded one glibc malloc)"
        ),
    ] = None,
) -> None:
    """Full ingest vs a bare paho subscriber on the same Mosquitto queue; CPU per fix; latency."""
    from locator.bench import ingest as bench

    configure_logging("warning")
    if not 1 <= fixes <= 100_000:
        raise ConfigError("--fixes must be 1..100000 (the broker queue holds 100000)")
    result = bench.run(
        devices=devices,
        fixes=fixes,
        publishers=publishers,
        rate=rate,
        latency_s=seconds,
        workdir=None,
        profile=profile,
        zones=zones,
        workers=workers,
        redis_binary=str(redis_server) if redis_server else None,
    )
    typer.echo(bench.report(result))


@bench_app.command("soak")
def bench_soak(
    bracelets: Annotated[int, typer.Option(min=1, help="simulated bracelets")] = 200_000,
    interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between a bracelet's fixes")
    ] = 60.0,
    duration: Annotated[float, typer.Option(min=1, help="seconds of publishing")] = 600.0,
    ingests: Annotated[int, typer.Option(min=1, help="homeward ingest processes")] = 2,
    redis_backend: Annotated[
        str,
        typer.Option(
            "--redis", help="cluster (a local 3-master Redis Cluster) or single (embedded)"
        ),
    ] = "cluster",
    publishers: Annotated[int, typer.Option(min=1, help="publisher processes")] = 2,
    search: Annotated[
        bool, typer.Option(help="if the rate is not held, try lower rates (shorter runs)")
    ] = True,
) -> None:
    """Province soak: bracelets through Mosquitto into N ingest processes; loss, latency, RSS."""
    from locator.bench import soak

    configure_logging("warning")
    count, length = bracelets, duration
    for stage in range(4 if search else 1):
        result = soak.run(
            bracelets=count,
            interval_s=interval,
            duration_s=length,
            ingests=ingests,
            backend=redis_backend,
            publishers=publishers,
        )
        typer.echo(soak.report(result))
        if result.held:
            if stage:
                typer.echo(f"highest rate held with zero loss: {result.offered_rate:,.0f} fixes/s")
            return
        count, length = int(count * 0.7), min(length, 3 * interval)
        if stage < 3 and search:
            typer.echo(f"\n--- trying {count / interval:,.0f} fixes/s ({count:,} bracelets) ---")
    typer.echo("no rate tried was held")


@bench_app.command("gateway")
def bench_gateway(
    connections: Annotated[int, typer.Option(min=1, help="GT06 bracelet sockets held")] = 10_000,
    frames: Annotated[int, typer.Option(min=1, help="location frames per socket")] = 5,
    rate: Annotated[float, typer.Option(help="offered frames/s for the latency run")] = 2000.0,
    seconds: Annotated[float, typer.Option(help="length of the latency run")] = 20.0,
    fleets: Annotated[int, typer.Option(min=1, help="processes holding the sockets")] = 2,
) -> None:
    """`homeward gateway` + Mosquitto + ingest vs a bare asyncio reader of the same bytes."""
    from locator.bench import gateway as bench

    configure_logging("warning")
    if rate > connections:
        raise ConfigError("--rate must be <= --connections (a GT06 fix time has whole seconds)")
    if connections * (frames + 1) > 100_000:
        raise ConfigError("--connections x (--frames + 1) must be <= 100000 (the broker queue)")
    result = bench.run(
        connections=connections,
        frames=frames,
        rate=rate,
        seconds=seconds,
        fleets=fleets,
        workdir=None,
    )
    typer.echo(bench.report(result))


@bench_app.command("alerts")
def bench_alerts(
    incidents: Annotated[int, typer.Option(help="elders who walk out (one incident each)")] = 200,
    background: Annotated[int, typer.Option(help="background bracelets")] = 2000,
    rate: Annotated[float, typer.Option(help="background fixes/s")] = 2000.0,
    spacing: Annotated[float, typer.Option(help="seconds between two exits")] = 0.1,
) -> None:
    """Confirming fix published → first SMS request at a Twilio-compatible server, under load."""
    from locator.bench import alerts as bench

    configure_logging("warning")
    result = bench.run(incidents=incidents, background=background, rate=rate, spacing_s=spacing)
    typer.echo(bench.report(result))


@bench_app.command("dispatch")
def bench_dispatch(
    alarms: Annotated[int, typer.Option(min=1, help="simulated alarms in the month")] = 2000,
    densities: Annotated[str, typer.Option(help="volunteers per km², comma-separated")] = (
        "1,2,3,4,6,8,12,16,24,32"
    ),
    elders: Annotated[int, typer.Option(min=1, help="elders in the demo district")] = 24,
    seed: Annotated[int, typer.Option(help="seed for the district, alarms and people")] = 1,
    registry: Annotated[
        bool, typer.Option("--registry", help="the running service's volunteers and elders")
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of compliance vs density")] = Path(
        "docs/dispatch-compliance.png"
    ),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="print the table only")] = False,
) -> None:
    """A month of alarms through the real dispatch ladder: 3/10 compliance per policy."""
    from locator.bench import dispatch as bench
    from locator.bench import district

    configure_logging("warning")
    try:
        chosen = tuple(float(v) for v in densities.split(",") if v.strip())
    except ValueError:
        raise ConfigError("--densities must be numbers, e.g. 1,2,4,8") from None
    if not chosen or min(chosen) <= 0:
        raise ConfigError("--densities must be positive numbers, e.g. 1,2,4,8")
    geography = None
    if registry:
        redis_url, _ = _require_urls(_command_settings(), mqtt=False)
        try:
            geography = asyncio.run(district.registry_geography(redis_url))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    result = bench.run(
        alarms=alarms, densities=chosen, seed=seed, elders=elders, geography=geography
    )
    typer.echo(bench.report(result))
    if plot is not None and not no_plot:
        try:
            typer.echo(f"plot: {bench.plot(result, plot)}")
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None


@bench_app.command("fences")
def bench_fences(
    elders: Annotated[int, typer.Option(help="elders, two zones each")] = 10_000,
    fixes: Annotated[int, typer.Option(help="fixes evaluated by the batch engine")] = 200_000,
    loop_fixes: Annotated[int, typer.Option(help="fixes for the per-point loop")] = 40_000,
    pipeline_fixes: Annotated[int, typer.Option(help="fixes through the whole ingest")] = 20_000,
    detection: Annotated[
        bool, typer.Option("--detection", help="replay elder-days: false alarms, misses, latency")
    ] = False,
    elder_days: Annotated[int, typer.Option(help="with --detection: per configuration")] = 100,
    intervals: Annotated[
        str, typer.Option(help="with --detection: base intervals, s")
    ] = "60,180,600",
    postgis_dsn: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server with PostGIS available ('' to skip)"),
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
) -> None:
    """Zone engine (batch) vs a per-point shapely loop (and PostGIS), plus the whole path.

    With --detection: simulated elder-days (half with a wandering walk) through the real
    pipeline, each base interval with and without adaptive reporting.
    """
    from locator.bench import fences

    configure_logging("warning")
    if detection:
        from locator.bench import detection as replay

        chosen = [float(v) for v in intervals.split(",") if v.strip()]
        typer.echo(replay.run(elders=elder_days, intervals=chosen, seed=1))
        return
    typer.echo(
        fences.run(
            elders=elders,
            fixes=fixes,
            loop_fixes=loop_fixes,
            pipeline_fixes=pipeline_fixes,
            postgis_dsn=postgis_dsn or None,
        )
    )


def main() -> None:
    """Entry point: a bad setting or a taken port is one line on stderr, never a traceback."""
    try:
        app()
    except HomewardError as exc:
        message = exc.message if isinstance(exc, Unprocessable) else str(exc)
        print(f"homeward: {message}", file=sys.stderr)
        sys.exit(2)
    except redis.RedisError as exc:
        print(f"homeward: Redis is unreachable or refused us: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"homeward: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
