"""`homeward gateway`: one asyncio TCP server per tracker protocol, republishing each frame
as a native uplink and answering the bracelet only once the broker has it.

Per connection there is one reader coroutine and a `Connection` of a few hundred bytes;
frames are handled in order: decode → check the device is registered with this protocol
(cached briefly) → publish its uplinks (QoS 1); the replies to the frames of one read are
written together, in order, each once the broker has acknowledged its uplinks (PUBACK).
Anything wrong (garbage, an oversized or badly checked frame, an unknown id) is
dead-lettered into the ingest's rejected stream and moves nobody; a connection that names
an unknown device, sends nothing valid within `first_frame_s`, keeps sending junk, or falls
silent for `idle_s` is closed. Commands from ``homeward/devices/+/cmd`` go to the socket of
the bracelet when this process holds it, or wait in Redis (10 min) for its next connection.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import threading
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from devices.gateway.common import to_native
from devices.gateway.framing import Frame
from devices.ingest.codecs import DecodeError
from devices.registry import gateway as state
from locator.core.clock import Clock, SystemClock
from locator.core.errors import ConfigError
from locator.core.logging import get_logger
from locator.core.redis import async_client
from locator.gateway import collector, protocols
from locator.gateway.protocols import ADAPTERS, Connection
from locator.gateway.uplink import MqttBridge, uplink_topic

log = get_logger(__name__)

READ_SIZE = 2048
MAX_BAD = 8  # bad events in a row before the connection is closed
PUBACK_TIMEOUT_S = 30.0
CACHE_S = 10.0  # a registration is seen within this long; the ingest re-checks anyway
NEGATIVE_CACHE_S = 2.0
CACHE_MAX = 100_000
HOLD_TTL_S = 1800  # the holder mark outlives a silent bracelet's idle timeout
SILENT_SKIPS = frozenset({"whitespace"})  # H02 line ends between frames: nothing wrong

# A frame's uplink publishes and the reply to write once the broker has them all.
Waiting = tuple[list[asyncio.Future[None]], bytes | None]


def default_client_id() -> str:
    """Stable per machine: the broker keeps the command subscription across restarts."""
    return f"homeward-gateway-{socket.gethostname()}"[:64]


class Gateway:
    """The gateway's servers, MQTT bridge and connections, on one event loop."""

    def __init__(
        self,
        *,
        redis_url: str,
        mqtt_url: str,
        host: str,
        ports: dict[str, int],
        client_id: str | None = None,
        clock: Clock | None = None,
        first_frame_s: float = 60.0,
        idle_s: float = 900.0,
        fall_back: bool = False,
        tend_gc: bool = False,
        cluster: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.mqtt_url = mqtt_url
        self.host = host
        self.wanted = dict(ports)
        self.client_id = client_id or default_client_id()
        self.clock = clock or SystemClock()
        self.first_frame_s = first_frame_s
        self.idle_s = idle_s
        self.fall_back = fall_back
        self.tend_gc = tend_gc  # a process of its own: `collector` (not inside `run`)
        self.ports: dict[str, int] = {}
        self.fell_back: dict[str, int] = {}  # protocol -> configured port that was taken
        self.connections: dict[str, Connection] = {}
        self._servers: list[asyncio.Server] = []
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._redis: aioredis.Redis | None = None
        self._bridge: MqttBridge | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._serving: set[asyncio.Task[Any]] = set()  # one per open socket
        self.error: BaseException | None = None

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "the gateway is not started"
        return self._redis

    @property
    def bridge(self) -> MqttBridge:
        assert self._bridge is not None, "the gateway is not started"
        return self._bridge

    # --- life cycle ---------------------------------------------------------------------------
    async def start(self) -> dict[str, int]:
        """Listen on every configured port; returns the ports in use per protocol."""
        loop = asyncio.get_running_loop()
        self._redis = async_client(self.redis_url, process="gateway", cluster=self.cluster)
        self._bridge = MqttBridge(
            self.mqtt_url, client_id=self.client_id, loop=loop, on_command=self._on_command
        )
        try:
            for name, port in self.wanted.items():
                server = await self._listen(name, port)
                self._servers.append(server)
                self.ports[name] = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.close()
            raise
        self._background.add(loop.create_task(self._bridge.expire(PUBACK_TIMEOUT_S)))
        if self.tend_gc:
            self._background.add(loop.create_task(collector.tend()))
        log.info("gateway_started", ports=self.ports, client_id=self.client_id)
        return dict(self.ports)

    async def _listen(self, name: str, port: int) -> asyncio.Server:
        adapter = ADAPTERS[name]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._serving.add(task)
            try:
                await self._serve(adapter, reader, writer)
            finally:
                self._serving.discard(task)

        try:
            return await asyncio.start_server(handle, self.host, port, limit=READ_SIZE)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"gateway cannot listen on {self.host}:{port}: {exc}") from None
            if not self.fall_back:
                raise ConfigError(
                    f"gateway port {self.host}:{port} ({name}) is in use; "
                    "set HOMEWARD_GATEWAY_PORTS to free ports"
                ) from None
            self.fell_back[name] = port
            return await asyncio.start_server(handle, self.host, 0, limit=READ_SIZE)

    async def close(self) -> None:
        """Stop listening, close every connection, disconnect from the broker and Redis."""
        for server in self._servers:
            server.close()
        for conn in list(self.connections.values()):
            conn.writer.close()
            # Python 3.11's wait_closed does not wait for the handlers, which would release
            # their holder marks after Redis is closed: give the marks back here, so the
            # next command waits in Redis for the bracelet's next connection.
            await self._release(conn, "shutdown")
        if self._serving:  # their release marks need Redis: let them finish before it goes
            await asyncio.wait(list(self._serving), timeout=5)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for task in list(self._background):
            task.cancel()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def run(self, stop: threading.Event, ready: threading.Event) -> None:
        """Thread entry for `run`/`demo`: serve until ``stop`` is set; ``ready`` once listening
        (or failed: then ``error`` says why)."""
        asyncio.run(self._run(stop, ready))

    async def _run(self, stop: threading.Event, ready: threading.Event) -> None:
        try:
            await self.start()
        except BaseException as exc:
            self.error = exc
            ready.set()
            return
        ready.set()
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            await self.close()

    # --- a connection -------------------------------------------------------------------------
    async def _serve(
        self, adapter: protocols.Adapter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        conn = Connection(adapter, writer, f"{peer[0]}:{peer[1]}" if peer else "?")
        reason = "closed"
        try:
            while True:
                limit = self.idle_s if conn.device_id else self.first_frame_s
                try:
                    async with asyncio.timeout(limit):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    reason = "idle" if conn.device_id else "nothing_valid"
                    break
                if not data:
                    break
                reason = await self._feed(conn, data)
                if reason:
                    break
                await writer.drain()
        except (ConnectionError, OSError):
            reason = "reset"
        except Exception:  # Redis away, a bug: this socket ends, the gateway carries on
            log.exception("gateway_connection_failed", protocol=conn.protocol, peer=conn.peer)
            reason = "error"
        finally:
            writer.close()
            await self._release(conn, reason or "closed")

    async def _feed(self, conn: Connection, data: bytes) -> str:
        """Handle the frames these bytes complete; a non-empty answer closes the connection.

        The uplinks of every frame in ``data`` are published at once and the acks go out
        together, in frame order, each only after its own PUBACKs: a bracelet that sends a
        batch (history after an outage) waits one broker round trip, not one per frame.
        """
        waits: list[Waiting] = []
        verdict = ""
        for event in conn.framer.feed(data):
            now = self.clock.time()
            if isinstance(event, Frame):
                verdict = await self._frame(conn, event.data, now, waits)
            elif event.reason in SILENT_SKIPS:
                continue
            else:
                detail = f"{len(event.data)} bytes skipped between frames"
                verdict = await self._reject(conn, event.reason, detail, event.data, now)
            if verdict:
                break
        await self._acknowledge(conn, waits)
        return verdict

    async def _acknowledge(self, conn: Connection, waits: list[Waiting]) -> None:
        """Write the replies whose uplinks the broker accepted, in order, in one write."""
        out = []
        for futures, ack in waits:
            if futures and not await self._accepted(conn, futures):
                continue  # no PUBACK: no acknowledgement, the bracelet may send it again
            if ack is not None:
                out.append(ack)
        waits.clear()
        if out:
            conn.writer.write(b"".join(out))

    async def _reject(
        self, conn: Connection, reason: str, detail: str, data: bytes, now: float
    ) -> str:
        conn.bad += 1
        await state.dead_letter(
            self.redis,
            reason=reason,
            detail=f"{detail} (from {conn.peer})",
            source=f"gateway/{conn.protocol}",
            frame=data,
            device_id=conn.device_id,
            elder_id=conn.elder_id,
            received_at=now,
        )
        log.info("gateway_rejected", protocol=conn.protocol, peer=conn.peer, reason=reason)
        return "too_much_garbage" if conn.bad >= MAX_BAD else ""

    async def _device(self, device_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        cached = self._cache.get(device_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        doc = await state.device(self.redis, device_id=device_id)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[device_id] = (now + (CACHE_S if doc else NEGATIVE_CACHE_S), doc)
        return doc

    async def _identify(
        self, conn: Connection, device_id: str, data: bytes, now: float
    ) -> tuple[str, list[dict[str, Any]]]:
        """Bind the connection to a registered device; ("unknown_device", []) if it is none."""
        doc = await self._device(device_id)
        if doc is None or doc.get("protocol") != conn.protocol:
            registered = f" (registered as {doc.get('protocol')})" if doc else ""
            detail = f"no {conn.protocol} device registered as {device_id}{registered}"
            conn.bad = MAX_BAD
            await self._reject(conn, "unknown_device", detail, data, now)
            return "unknown_device", []
        conn.device_id, conn.elder_id = device_id, int(doc["elder_id"])
        conn.held_at = time.monotonic()
        previous = self.connections.get(device_id)
        if previous is not None and previous is not conn:
            previous.writer.close()  # the bracelet reconnected: its old socket is dead
        self.connections[device_id] = conn
        pending = await state.hold(
            self.redis, device_id=device_id, gateway=self.client_id, ttl_s=HOLD_TTL_S, now=now
        )
        log.info("gateway_connected", protocol=conn.protocol, device_id=device_id, peer=conn.peer)
        return "", pending

    async def _frame(self, conn: Connection, data: bytes, now: float, waits: list[Waiting]) -> str:
        try:
            packet = conn.adapter.decode(data)
        except DecodeError as exc:
            return await self._reject(conn, exc.reason, exc.detail, data, now)
        named = packet.device_id
        pending: list[dict[str, Any]] = []
        if conn.device_id is None:
            if named is None:
                detail = "a frame before the login names no device"
                return await self._reject(conn, "not_logged_in", detail, data, now)
            verdict, pending = await self._identify(conn, named, data, now)
            if verdict:
                return verdict
        elif named is not None and named != conn.device_id:
            detail = f"{named} on the connection of {conn.device_id}"
            return await self._reject(conn, "device_changed", detail, data, now)
        device_id = conn.device_id
        assert device_id is not None
        if time.monotonic() - conn.held_at > HOLD_TTL_S / 3:  # a long-lived socket stays ours
            conn.held_at = time.monotonic()
            await state.refresh(
                self.redis, device_id=device_id, gateway=self.client_id, ttl_s=HOLD_TTL_S
            )
        conn.bad = 0
        conn.remember(packet)
        auth_code = ""
        if protocols.is_registration(packet):
            auth_code = await state.auth_code(self.redis, device_id=device_id)
        code = protocols.authentication(packet)
        if code is not None:
            conn.authenticated = code == await state.auth_code(self.redis, device_id=device_id)
        for answer in protocols.answers(packet):
            await state.record_answer(self.redis, device_id=device_id, answer=answer, now=now)
        if self.bridge.full:
            await self.bridge.room()
        topic = uplink_topic(device_id)
        futures = [
            self.bridge.publish(topic, json.dumps(uplink).encode())
            for uplink in map(to_native, packet.messages)
            if uplink is not None
        ]
        waits.append((futures, protocols.reply(conn, packet, auth_code=auth_code)))
        if pending:
            await self._acknowledge(conn, waits)  # the login's reply before the commands
            for command in pending:
                await self._send(conn, command, now)
        return ""

    async def _accepted(self, conn: Connection, futures: list[asyncio.Future[None]]) -> bool:
        try:
            for future in futures:  # the bridge fails them after PUBACK_TIMEOUT_S
                await future
        except (TimeoutError, ConnectionError) as exc:
            self.bridge.forget(futures)
            log.warning("gateway_uplink_not_accepted", device_id=conn.device_id, error=str(exc))
            return False
        return True

    async def _release(self, conn: Connection, reason: str) -> None:
        """``_disconnected`` that never raises: a mark left behind expires by itself."""
        try:
            await self._disconnected(conn, reason)
        except (RedisError, OSError) as exc:  # Redis away (or stopping first)
            log.warning("gateway_release_failed", device_id=conn.device_id, error=str(exc))
        except Exception:
            log.exception("gateway_release_failed", device_id=conn.device_id)

    async def _disconnected(self, conn: Connection, reason: str) -> None:
        device_id = conn.device_id
        log.info("gateway_disconnected", protocol=conn.protocol, device_id=device_id, why=reason)
        if device_id is None or self.connections.get(device_id) is not conn:
            return
        del self.connections[device_id]
        if self._redis is not None:
            await state.release(
                self.redis, device_id=device_id, gateway=self.client_id, now=self.clock.time()
            )

    # --- commands -----------------------------------------------------------------------------
    def _on_command(self, device_id: str, payload: bytes) -> None:
        """From the broker (on the loop): send now, or keep for the next connection."""
        try:
            command = json.loads(payload)
            action = command["action"]
        except (ValueError, KeyError, TypeError):
            log.warning("gateway_bad_command", device_id=device_id)
            return
        if not isinstance(command, dict) or action not in ("reportLocation", "setInterval"):
            return
        task = asyncio.get_running_loop().create_task(self._command(device_id, command))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _command(self, device_id: str, command: dict[str, Any]) -> None:
        now = self.clock.time()
        conn = self.connections.get(device_id)
        if conn is not None:
            await self._send(conn, command, now)
            return
        doc = await self._device(device_id)
        if doc is None or doc.get("protocol") not in ADAPTERS:
            return  # a native bracelet's command: not ours
        holder = await state.holder(self.redis, device_id=device_id)
        if holder is not None and holder != self.client_id:
            return  # the gateway holding the bracelet got the same message and sends it
        await state.queue_command(self.redis, device_id=device_id, command=command, now=now)
        log.info("gateway_command_queued", device_id=device_id, action=command["action"])

    async def _send(self, conn: Connection, command: dict[str, Any], now: float) -> None:
        action, seconds = str(command["action"]), command.get("seconds")
        device_id = conn.device_id
        assert device_id is not None
        try:
            data = protocols.command(conn, action, seconds, now=now)
        except ValueError as exc:
            text = f"{action} not sent: {exc}"
        else:
            conn.writer.write(data)
            text = f"{action} {seconds}" if seconds else action
        await state.record_command(self.redis, device_id=device_id, command=text, now=now)
        log.info("gateway_command_sent", device_id=device_id, command=text)
