"""The processes `homeward bench gateway` drives: GT06 bracelet fleets and the bare reader.

A fleet process holds thousands of bracelet sockets on one asyncio loop and obeys its pipe:
``connect`` (each socket logs in and waits for its ack), ``blast`` (every socket sends its
location frames and a heartbeat; the heartbeat's ack is the barrier: the server handles a
socket's frames in order), ``paced`` (a fixed rate of fixes stamped with the send time,
each bracelet at most once a second: GT06 times have whole seconds), ``close``.

The bare reader is the baseline: an asyncio server that reads the same byte streams, splits
them with the same GT06 framer, counts frames and acknowledges what GT06 acknowledges
(login, heartbeat) with bytes copied from the frame: no decoding, no broker, no Redis.
"""

from __future__ import annotations

import asyncio
import resource
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

from devices.gateway import device_side as dev
from devices.gateway.framing import Frame
from devices.gateway.gt06 import Gt06Framer

HOME = (30.5112, 120.6853)
CONNECT_AT_ONCE = 50  # per fleet: the servers' listen backlog is asyncio's default 100
ACKED_PROTOS = frozenset({0x01, 0x13})


def raise_nofile() -> int:
    """Raise the open-files limit to the hard limit (each socket is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def imei(n: int) -> str:
    """The n-th bench bracelet's 15-digit IMEI."""
    return f"35{n:013d}"


def position(n: int) -> tuple[float, float]:
    """Each bracelet stays at its own spot near home: no jumps, nothing for the zones."""
    return HOME[0] + (n % 100) * 1e-4, HOME[1] + (n // 100 % 100) * 1e-4


# --- a fleet process ---------------------------------------------------------------------------
class _Link:
    """One bracelet socket and the acks it has seen."""

    __slots__ = ("acked", "last_tst", "n", "reader", "serial", "task", "wake", "writer")

    def __init__(self, n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.n = n
        self.reader, self.writer = reader, writer
        self.serial = 1
        self.acked = 0
        self.last_tst = 0
        self.wake: asyncio.Future[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    async def _read(self) -> None:
        framer = Gt06Framer()
        while data := await self.reader.read(4096):
            self.acked += sum(isinstance(e, Frame) for e in framer.feed(data))
            if self.wake is not None and not self.wake.done():
                self.wake.set_result(None)

    async def acks(self, count: int) -> None:
        while self.acked < count:
            if self.task.done():
                raise ConnectionError(f"bracelet {imei(self.n)}: the server closed the socket")
            self.wake = asyncio.get_running_loop().create_future()
            await asyncio.wait([self.wake, self.task], return_when=asyncio.FIRST_COMPLETED)


class _Fleet:
    def __init__(self) -> None:
        self.links: list[_Link] = []

    async def connect(self, port: int, numbers: list[int]) -> tuple[int, float]:
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)
        started = time.perf_counter()

        async def one(n: int) -> None:
            async with gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                link = _Link(n, reader, writer)
                self.links.append(link)
                writer.write(dev.gt06_login(imei=imei(n), serial=1))
                await asyncio.wait_for(link.acks(1), 60)

        results = await asyncio.gather(*(one(n) for n in numbers), return_exceptions=True)
        held = sum(1 for r in results if r is None)
        return held, time.perf_counter() - started

    async def blast(self, frames: int, base_tst: int) -> tuple[float, float, int]:
        """Every socket sends ``frames`` fixes and a heartbeat; (start, end, fixes) wall times."""
        streams = []
        for link in self.links:
            lat, lon = position(link.n)
            data = b"".join(
                dev.gt06_location(tst=base_tst + k, lat=lat, lon=lon, serial=link.next_serial())
                for k in range(frames)
            )
            streams.append((link, data + dev.gt06_heartbeat(serial=link.next_serial())))
            link.last_tst = base_tst + frames - 1
        targets = [link.acked + 1 for link in self.links]
        started = time.time()
        for link, data in streams:
            link.writer.write(data)
        await asyncio.gather(*(link.acks(t) for link, t in zip(self.links, targets, strict=True)))
        return started, time.time(), frames * len(self.links)

    async def paced(self, rate: float, seconds: float) -> list[tuple[int, int, float]]:
        """(bracelet, fix time, send time) of each fix sent at ``rate`` for ``seconds``."""
        sent: list[tuple[int, int, float]] = []
        if not self.links or rate <= 0:
            return sent
        started = time.perf_counter()
        total = int(rate * seconds)
        cursor = 0
        while len(sent) < total and time.perf_counter() - started < seconds + 5:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            for _ in range(due - len(sent)):
                link = self.links[cursor % len(self.links)]
                cursor += 1
                now = time.time()
                tst = int(now)
                if tst <= link.last_tst:
                    continue  # this bracelet already sent in this second: next one
                link.last_tst = tst
                lat, lon = position(link.n)
                link.writer.write(
                    dev.gt06_location(tst=tst, lat=lat, lon=lon, serial=link.next_serial())
                )
                sent.append((link.n, tst, now))
            await asyncio.sleep(0.005)
        return sent

    async def close(self) -> None:
        for link in self.links:
            link.writer.close()
            link.task.cancel()
        await asyncio.gather(*(link.task for link in self.links), return_exceptions=True)
        self.links = []


async def _obey(pipe: Pipe) -> None:
    loop = asyncio.get_running_loop()
    fleet = _Fleet()
    while True:
        command, args = await loop.run_in_executor(None, pipe.recv)
        result: Any = None
        if command == "connect":
            result = await fleet.connect(*args)
        elif command == "blast":
            result = await fleet.blast(*args)
        elif command == "paced":
            result = await fleet.paced(*args)
        elif command == "close":
            await fleet.close()
        else:
            pipe.send(None)
            return
        pipe.send(result)


def fleet_main(pipe: Pipe) -> None:
    """Entry of a fleet process (spawned)."""
    raise_nofile()
    asyncio.run(_obey(pipe))


# --- the baseline -------------------------------------------------------------------------------
async def _bare(pipe: Pipe) -> None:
    frames = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal frames
        framer = Gt06Framer()
        try:
            while data := await reader.read(2048):
                for event in framer.feed(data):
                    if isinstance(event, Frame):
                        frames += 1
                        if event.data[3] in ACKED_PROTOS:
                            serial = int.from_bytes(event.data[-6:-4], "big")
                            writer.write(dev.gt06_frame(event.data[3], b"", serial))
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=2048)
    pipe.send(server.sockets[0].getsockname()[1])
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pipe.recv)  # anything: stop
    server.close()
    pipe.send(frames)


def bare_main(pipe: Pipe) -> None:
    """Entry of the bare reader process (spawned): sends its port, then its frame count."""
    raise_nofile()
    asyncio.run(_bare(pipe))
