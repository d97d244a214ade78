"""The ingest's store workers: one bracelet in one lane (stored in order), acks in receive
order whichever worker finishes first, an unstored batch holding back later acks and
redelivered after a stop. Real Mosquitto and Redis; the sequencer and lanes also pure."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devices.ingest.batch import Message
from devices.ingest.codecs import Route
from locator import cli, watchdog
from locator.core.clock import ManualClock
from locator.core.errors import ConfigError
from locator.core.mqtt_burst import Delivery
from locator.core.redis import sync_client
from locator.core.settings import load_settings
from locator.ingest_lanes import AckSequencer, lane_of, split
from locator.ingest_loop import IngestLoop, is_outage
from tests.conftest import Api
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.test_ingest import fix, register
from tests.test_mqtt_burst import needs_mosquitto

# --- pure: the sequencer and the lanes -----------------------------------------------------


def test_the_sequencer_releases_only_the_done_prefix_in_receive_order() -> None:
    released: list[list[str]] = []
    acks: AckSequencer[str] = AckSequencer(released.append)
    first = acks.number(3)
    assert (first, acks.number(2)) == (0, 3)
    # The later batch (numbers 1 and 3) is stored first: nothing may be acknowledged yet.
    assert acks.done([(1, "b1"), (3, "b3")]) == 0
    assert released == [] and acks.waiting == 2
    assert acks.done([(0, "a0"), (2, "a2")]) == 4
    assert released == [["a0", "b1", "a2", "b3"]]
    assert acks.done([(4, "a4")]) == 1
    assert released[-1] == ["a4"] and acks.waiting == 0


def test_the_sequencer_releases_each_once_in_order_from_many_threads() -> None:
    released: list[int] = []
    acks: AckSequencer[int] = AckSequencer(released.extend)
    total, lanes = 20_000, 4
    numbers = list(range(acks.number(total), total))
    random.Random(7).shuffle(numbers)
    shares = [numbers[lane::lanes] for lane in range(lanes)]

    def mark(share: list[int]) -> None:
        for start in range(0, len(share), 50):
            acks.done((n, n) for n in share[start : start + 50])

    threads = [threading.Thread(target=mark, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert released == list(range(total))
    assert acks.waiting == 0


def test_a_device_has_one_lane_and_a_split_keeps_order_and_numbers() -> None:
    # An OwnTracks phone's transitions go where its locations go.
    for lanes in (2, 3, 5):
        for user in ("ann", "bob", "chen", "dai"):
            location = f"owntracks/{user}/phone"
            assert lane_of(location + "/event", lanes) == lane_of(location, lanes)
    topics = [f"homeward/devices/d-{n % 7}/up" for n in range(40)]
    burst: list[Delivery] = [(topic, b"", n + 1, 1, False) for n, topic in enumerate(topics)]
    parts = split(burst, 100, 3)
    assert sorted(n for numbers, _ in parts for n in numbers) == list(range(100, 140))
    for lane, (numbers, deliveries) in enumerate(parts):
        assert numbers == sorted(numbers)
        assert all(lane_of(d[0], 3) == lane for d in deliveries)
        assert [d[2] for d in deliveries] == [n - 99 for n in numbers]
    assert sum(1 for _, deliveries in parts if deliveries) > 1  # the test deals to several


# --- through the broker --------------------------------------------------------------------


async def _two_lanes(api: Api, prefix: str) -> tuple[str, str]:
    """Two bracelets, registered, whose topics are in different lanes of two."""
    ids = [f"{prefix}-{n}" for n in range(20)]
    first = ids[0]
    other = next(d for d in ids if lane_of(_up(d), 2) != lane_of(_up(first), 2))
    for device_id in (first, other):
        await register(api, device_id)
    return first, other


def _up(device_id: str) -> str:
    return f"homeward/devices/{device_id}/up"


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    running = Publisher(mqtt_url)
    yield running
    running.close()


StartIngest = Callable[..., RunningIngest]


@pytest.fixture
def start_ingest(
    mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[StartIngest]:
    """``start_ingest(workers, client_id=None)``: an ingest on the test broker and Redis,
    stopped when the test ends if the test has not stopped it."""
    started: list[RunningIngest] = []

    def start(workers: int, client_id: str | None = None) -> RunningIngest:
        ingest = RunningIngest(
            mqtt_url, redis_url, tmp_path, clock, client_id=client_id, workers=workers
        )
        started.append(ingest)
        return ingest

    yield start
    for ingest in started:
        ingest.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_one_bracelets_burst_is_stored_in_order_beside_others(
    api: Api, clock: ManualClock, publisher: Publisher, start_ingest: StartIngest, workers: int
) -> None:
    """A bracelet that buffered its fixes sends them in one run: none may be stored 'late'."""
    devices = [f"run-{n}" for n in range(6)]
    assert {lane_of(_up(d), 2) for d in devices} == {0, 1}  # both lanes have work
    for device_id in devices:
        await register(api, device_id)
    ingest = start_ingest(workers)
    t0, count = clock.time() - 1000, 150
    infos = []
    for n in range(count):
        for device_id in devices:
            body = json.dumps(fix(t0 + n, lat=30.5 + n * 1e-5)).encode()
            infos.append(publisher.client.publish(_up(device_id), body, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=10)
    ingest.wait_processed(count * len(devices), timeout=30)
    verdicts: dict[str, int] = {}
    for outcome in ingest.outcomes:
        for key, value in outcome.outcomes.items():
            verdicts[key] = verdicts.get(key, 0) + value
    assert verdicts == {"stored": count * len(devices)}
    # Each bracelet is cached by one worker only.
    for device_id in devices:
        route = Route("native", device_id)
        holders = [
            lane for lane in ingest.loop._lanes if lane.store and route in lane.store.routes._known
        ]
        assert len(holders) == 1


def _spy_acks(ingest: RunningIngest) -> tuple[list[list[str]], dict[int, str]]:
    """What the loop acknowledges, each write as the topics of its message ids."""
    client = ingest.loop._client
    topics: dict[int, str] = {}
    writes: list[list[str]] = []
    on_burst, ack_many = client.on_burst, client.ack_many
    assert on_burst is not None

    def receive(burst: list[Delivery]) -> None:
        topics.update((mid, topic) for topic, _, mid, _, _ in burst)
        on_burst(burst)

    def acknowledge(mids: list[int]) -> object:
        writes.append([topics[mid] for mid in mids])
        return ack_many(mids)

    client.on_burst = receive
    client.ack_many = acknowledge  # type: ignore[method-assign]
    return writes, topics


def _hold_lane(
    ingest: RunningIngest, device_id: str, hold: Callable[[threading.Event], None]
) -> threading.Event:
    """The store of the device's lane runs ``hold(gate)`` before each batch is sent."""
    lane = ingest.loop._lanes[lane_of(_up(device_id), ingest.loop.workers)]
    store = lane.store
    assert store is not None
    submit = store.submit
    gate = threading.Event()

    def held(batch: list[Message]) -> object:
        hold(gate)
        return submit(batch)

    store.submit = held  # type: ignore[method-assign]
    return gate


def _stored(ingest: RunningIngest, device_id: str) -> int:
    with ingest._lock:
        return sum(
            1
            for outcome in ingest.outcomes
            for position, verdict in outcome.positions
            if position.device_id == device_id and verdict == "stored"
        )


@needs_mosquitto
async def test_a_later_batch_stored_first_is_acknowledged_after_the_earlier_one(
    api: Api, clock: ManualClock, publisher: Publisher, start_ingest: StartIngest
) -> None:
    slow, fast = await _two_lanes(api, "ack")
    ingest = start_ingest(2)
    writes, _ = _spy_acks(ingest)
    gate = _hold_lane(ingest, slow, lambda gate: gate.wait(10))
    publisher.send(_up(slow), fix(clock.time() - 10))
    publisher.send(_up(fast), fix(clock.time() - 10))
    wait_for(lambda: _stored(ingest, fast) == 1)
    assert writes == []  # stored, but received after a message not stored yet
    gate.set()
    wait_for(lambda: sum(len(w) for w in writes) == 2)
    assert writes == [[_up(slow), _up(fast)]]  # receive order, one write


@needs_mosquitto
async def test_stopping_with_a_batch_unstored_acknowledges_nothing_after_it(
    api: Api, clock: ManualClock, publisher: Publisher, start_ingest: StartIngest
) -> None:
    """A lane that cannot write (an outage) when the ingest stops: its batch and every
    later message unacknowledged, so the broker redelivers them to the next run."""
    slow, fast = await _two_lanes(api, "held")
    client_id = f"held-{uuid.uuid4().hex[:6]}"
    ingest = start_ingest(2, client_id)
    writes, _ = _spy_acks(ingest)

    def outage(gate: threading.Event) -> None:
        raise redis.ConnectionError("the test holds this lane")

    _hold_lane(ingest, slow, outage)
    publisher.send(_up(slow), fix(clock.time() - 10))
    publisher.send(_up(fast), fix(clock.time() - 10))
    wait_for(lambda: _stored(ingest, fast) == 1)
    wait_for(lambda: not ingest.loop.redis_ok)
    ingest.close()
    assert not ingest.thread.is_alive()
    assert writes == []
    again = start_ingest(2, client_id)
    wait_for(lambda: _stored(again, slow) == 1)
    # The fast one came back too (its ack was held): a duplicate now, not a second fix.
    wait_for(lambda: any(o.outcomes["rejected:duplicate"] for o in again.outcomes))
    assert _stored(again, fast) == 0


# --- the loop's shared parts -----------------------------------------------------------------


def test_the_lag_is_the_oldest_unstored_message_of_any_lane(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    loop = IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        clock=clock,
        retention_s=86400,
        workers=2,
    )
    check = sync_client(redis_url, process="test")

    def lag() -> float:
        loop._beat()
        return float(watchdog.assess(check, now=clock.time()).ingest_lag_s)

    try:
        now = clock.time()
        old, new = loop._lanes
        old.queue.put((1, now - 7.0, [0], [(_up("x"), b"{}", 1, 1, False)]))
        new.queue.put((1, now - 3.0, [1], [(_up("y"), b"{}", 2, 1, False)]))
        assert lag() == 7.0
        batch, _ = old.next_batch()
        assert lag() == 7.0  # being stored is not stored yet
        old.stored(len(batch))
        assert lag() == 3.0
        new.stored(len(new.next_batch()[0]))
        assert lag() == 0.0
        assert loop.handled == 2
    finally:
        check.close()
        loop._redis.close()


def test_the_worker_count_is_a_setting(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOMEWARD_INGEST_WORKERS", "3")
    loop = cli._ingest_loop(
        load_settings(data_dir=tmp_path), redis_url=redis_url, mqtt_url=mqtt_url
    )
    loop._redis.close()
    assert loop.workers == 3
    monkeypatch.setenv("HOMEWARD_INGEST_WORKERS", "0")
    with pytest.raises(ConfigError, match="HOMEWARD_INGEST_WORKERS"):
        load_settings(data_dir=tmp_path)


def test_an_out_of_memory_redis_is_an_outage_not_a_bad_message() -> None:
    # redis-py maps "-OOM ..." to OutOfMemoryError and drops the code from the text: the batch
    # must wait for memory (acks held), not be dead-lettered as internal_error.
    oom = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    assert is_outage(oom)
    assert is_outage(redis.ResponseError("OOM command not allowed when used memory"))
    assert not is_outage(redis.ResponseError("ERR wrong number of arguments"))
