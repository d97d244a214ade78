"""The ingest stage: a batch of MQTT messages → decoded, validated, stored in one round trip.

Decoding and validation are pure (codecs); storage is one Lua script per uplink, run for
``ITEMS_PER_CALL`` uplinks at a time by one call (``ItemScript``; on a cluster, one call per
hash slot), all of a batch's calls pipelined, so a batch costs one Redis round trip (plus one
to resolve devices the cache has not seen). The script is idempotent: a redelivered fix is a
duplicate, not a second fix.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from devices import keys
from devices.ingest.batch import (
    BatchOutcome,
    Call,
    Message,
    Pending,
    Reject,
    Sent,
    Submitted,
)
from devices.ingest.codecs import (
    DecodeError,
    Fix,
    Heartbeat,
    Ignored,
    Route,
    Uplink,
    check_fix_time,
    decode,
    is_low_quality,
    route_of,
)
from devices.ingest.routes import DeviceRoutes
from devices.ingest.store_args import script_number, store_call
from devices.ingest.store_script import (
    DEAD_LETTER_SCRIPT,
    STORE_SCRIPT,
    FixEvaluator,
    assemble,
)
from devices.ingest.throttle import Throttle
from devices.reporting import is_slow
from locator.core import keys as core_keys
from locator.core import relay
from locator.core.clock import Clock
from locator.core.logging import get_logger
from locator.core.redis import is_cluster
from locator.core.scripts import slot_of

log = get_logger(__name__)

MAX_SPEED_KMH = 200.0
LOW_BATTERY_PCT = 20
# Tries per uplink while its device binding or its elder's zone state moves under it. With
# several ingest processes sharing the uplink a zone conflict is common, but each one means
# another process committed this elder's fix: eight in a row is a storm, not bad luck.
WRITE_ATTEMPTS = 8
# Uplinks per store call. Past ~10 Redis saves nothing more per uplink (measured), while a
# call of a whole batch costs it more (its large KEYS and ARGV) and leaves it idle until
# the batch is built; 16 (~13 kB) go out as soon as built (StreamingPipeline.CHUNK_BYTES).
ITEMS_PER_CALL = 16

MESSAGES = PromCounter("homeward_ingest_messages_total", "Uplink messages by outcome", ["outcome"])
REJECTED = PromCounter(
    "homeward_ingest_rejected_total", "Rejected uplink messages by reason", ["reason"]
)
BATCH_SECONDS = Histogram(
    "homeward_ingest_batch_seconds",
    "Time to decode and store one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram(
    "homeward_ingest_batch_size", "Messages per batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200)
)


def _alarm(uplink: Uplink | DecodeError) -> bool:
    """An alarm someone must act on: it may pass a device's empty bucket now and then."""
    if isinstance(uplink, DecodeError):
        return uplink.salvage is not None and _alarm(uplink.salvage)
    return getattr(uplink, "alarm", None) in ("sos", "fall", "removed")


class UplinkStore:
    """Turns batches of messages into stored fixes, device state, events and dead letters."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Clock,
        retention_s: int,
        offline_after_s: int = 1200,
        evaluator: FixEvaluator | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._redis = client
        self.evaluator = evaluator
        self.throttle = throttle or Throttle()
        self._clock = clock
        self._retention_ms = retention_s * 1000
        self._offline_after_s = offline_after_s
        # The store script's per-deployment arguments (ARGV 6 and 18), formatted once.
        self._max_speed = script_number(MAX_SPEED_KMH)
        self._low_battery = str(LOW_BATTERY_PCT)
        self.routes = DeviceRoutes(client, clock)
        # The batch's effects on shared keys, applied after its scripts (locator/core/relay.py).
        self._relay_token = relay.writer_token()
        self._relays: dict[int, list[str]] = {}
        # Batches submitted and not finished yet, oldest first (two at most in the ingest).
        self._in_flight: list[Submitted] = []
        # Intents of a batch that relayed nothing: unmarked in the next batch's round trip
        # (an idle ingest leaves them to the ticker's sweep, which finds nothing to do).
        self._unmark: set[int] = set()
        self._script = STORE_SCRIPT if evaluator is None else assemble(evaluator.lua_pieces())
        self._cluster = is_cluster(client)
        self._load_scripts()

    def _load_scripts(self) -> None:
        self._script.ensure_loaded(self._redis)
        DEAD_LETTER_SCRIPT.ensure_loaded(self._redis)

    def process(self, batch: list[Message]) -> BatchOutcome:
        """Decode, validate and store a batch; raises only if Redis is unreachable."""
        return self.finish(self.submit(batch))

    def submit(self, batch: list[Message]) -> Submitted:
        """Decode and validate a batch and send its first write attempt; ``finish`` reads it.

        A batch submitted while another is in flight follows it on its connection: Redis
        runs it after the other (an elder's fixes stay in order) while this process reads
        the other's replies; batches are finished in the order submitted.
        """
        started, outcome = time.perf_counter(), BatchOutcome()
        slots, decoded, at, throttled = self._decode(batch, outcome)
        for index, item in self._attribute(decoded):
            slots[at[index]].append(item)
        sent = self._send(
            [item for slot in slots for item in slot],
            set(),
            after=self._in_flight[-1].sent.pipe if self._in_flight else None,
        )
        submitted = Submitted(batch, outcome, started, throttled, sent)
        self._in_flight.append(submitted)
        return submitted

    def finish(self, submitted: Submitted) -> BatchOutcome:
        """Read a submitted batch's replies, settle what moved, relay its effects."""
        if not self._in_flight or self._in_flight[0] is not submitted:
            raise RuntimeError("batches are finished in the order they were submitted")
        outcome, intended = submitted.outcome, submitted.sent.intended
        self._relays = {}
        try:
            stale = self._receive(submitted.sent, outcome)
            for attempt in range(2, WRITE_ATTEMPTS + 1):
                if not stale:
                    break
                # A moved device binding or zone state: look again. The last attempt stores
                # the fix without its zone update (breaking every streak) rather than lose it.
                for pending in stale:
                    self.routes.forget(pending.route)
                    if self.evaluator is not None:
                        self.evaluator.forget(pending.target.elder_id)
                again = [
                    item
                    for _, item in self._attribute([(p.message, p.route, p.uplink) for p in stale])
                ]
                for item in again:
                    if isinstance(item, Pending):
                        item.skip_zones = attempt == WRITE_ATTEMPTS
                        if item.skip_zones:
                            log.warning("ingest_zones_unsettled", elder_id=item.target.elder_id)
                stale = self._receive(self._send(again, intended), outcome)
        finally:
            self._in_flight.pop(0)
        for pending in stale:
            self._count_reject(outcome, "unknown_device")
            log.warning("ingest_route_unstable", device_id=pending.target.device_id)
        # Her intent stays marked while a later batch in flight has her too: that one
        # releases it when its own effects are applied.
        flying = self._flying()
        # Before the batch is acknowledged: a crash before this redelivers it, and the
        # scripts then return what is still on each elder's relay list.
        if any(self._relays.values()):
            release, self._unmark = (intended | self._unmark) - flying, self._unmark & flying
            relay.apply(self._redis, self._relays, token=self._relay_token, intended=release)
        else:
            self._unmark |= intended
        if submitted.throttled:
            self._report_throttled(submitted.throttled, outcome)
        # Metrics once per batch, not per message: label lookups cost as much as decoding.
        for key, count in outcome.outcomes.items():
            if key.startswith("rejected:"):
                REJECTED.labels(key.removeprefix("rejected:")).inc(count)
            else:
                MESSAGES.labels(key).inc(count)
        BATCH_SIZE.observe(len(submitted.batch))
        BATCH_SECONDS.observe(time.perf_counter() - submitted.started)
        return outcome

    def abandon(self) -> None:
        """Forget the batches in flight (their replies unread): the caller stores them again."""
        for submitted in self._in_flight:
            with contextlib.suppress(Exception):
                submitted.sent.pipe.execute(raise_on_error=False)
        self._in_flight.clear()

    def holds(self, submitted: Submitted) -> bool:
        """Still in flight (not finished, not abandoned)."""
        return any(s is submitted for s in self._in_flight)

    def _flying(self) -> set[int]:
        """Elders of the batches still in flight."""
        return set().union(*(s.sent.intended for s in self._in_flight))

    def _decode(
        self, batch: list[Message], outcome: BatchOutcome
    ) -> tuple[
        list[list[Pending | Reject]],
        list[tuple[Message, Route, Uplink | DecodeError]],
        list[int],
        dict[Route, list[Message]],
    ]:
        """Route, decode and throttle a batch: (slots, decoded, each one's slot, throttled).

        One slot per message, in arrival order, so dead letters read chronologically; the
        decoded uplinks (errors included) go on to attribution, the throttled to a count.
        """
        slots: list[list[Pending | Reject]] = []
        decoded: list[tuple[Message, Route, Uplink | DecodeError]] = []
        at: list[int] = []
        throttled: dict[Route, list[Message]] = {}
        allow = self.throttle.allow
        for message in batch:
            topic = message.topic
            try:
                route = route_of(topic)
            except DecodeError as exc:
                slots.append([Reject(message, exc.reason, exc.detail, None)])
                continue
            try:
                uplink: Uplink | DecodeError = decode(route, message.payload, topic=topic)
            except DecodeError as exc:
                uplink = exc  # still attributed below, so the family sees their device's errors
            slots.append([])
            if isinstance(uplink, Ignored):
                outcome.outcomes["ignored"] += 1
                continue
            if not allow(route, message.received_at, alarm=_alarm(uplink)):
                throttled.setdefault(route, []).append(message)
                continue
            at.append(len(slots) - 1)
            decoded.append((message, route, uplink))
        return slots, decoded, at, throttled

    def _attribute(
        self, decoded: Sequence[tuple[Message, Route, Uplink | DecodeError]]
    ) -> list[tuple[int, Pending | Reject]]:
        """Attach each decoded uplink to its device and elder, or reject it."""
        targets = self.routes.resolve({route for _, route, _ in decoded}) if decoded else {}
        out: list[tuple[int, Pending | Reject]] = []
        for index, (message, route, uplink) in enumerate(decoded):
            target = targets.get(route)
            if isinstance(uplink, DecodeError):
                out.append((index, Reject(message, uplink.reason, uplink.detail, target)))
                if uplink.salvage is not None and target is not None:
                    out.append((index, Pending(message, route, uplink.salvage, target, True)))
                continue
            if target is None:
                detail = f"no device registered for {route.protocol} {route.ref}"
                out.append((index, Reject(message, "unknown_device", detail, None)))
                continue
            named = getattr(uplink, "named_device", None)
            if named is not None and named != target.device_id:
                detail = f"payload names device {named[:64]!r}"
                out.append((index, Reject(message, "spoofed", detail, target)))
                continue
            if isinstance(uplink, Fix):
                try:
                    check_fix_time(uplink.tst, received_at=message.received_at)
                except DecodeError as exc:
                    out.append((index, Reject(message, exc.reason, exc.detail, target)))
                    if uplink.alarm is not None:
                        salvage = Heartbeat(tst=None, batt=uplink.batt, alarm=uplink.alarm)
                        out.append((index, Pending(message, route, salvage, target, True)))
                    continue
            out.append((index, Pending(message, route, uplink, target)))
        return out

    def _count_reject(self, outcome: BatchOutcome, reason: str, count: int = 1) -> None:
        outcome.outcomes["rejected"] += count
        outcome.outcomes[f"rejected:{reason}"] += count

    def _report_throttled(
        self, throttled: dict[Route, list[Message]], outcome: BatchOutcome
    ) -> None:
        """A flood's excess, aggregated: one count per device and batch, a sampled dead letter.

        At thousands of messages a second, one dead letter each would fill Redis: the
        thing the throttle is there to prevent.
        """
        targets = self.routes.resolve(set(throttled))
        pipe = self._redis.pipeline(transaction=False)
        for route, messages in throttled.items():
            count, last = len(messages), messages[-1]
            self._count_reject(outcome, "rate_limited", count)
            pipe.hincrby(core_keys.REJECTED_COUNTS, "rate_limited", count)
            sampled = self.throttle.dropped(route, count, last.received_at)
            if sampled is not None:
                detail = (
                    f"{sampled} messages dropped since the last sample: over "
                    f"{self.throttle.burst} at once or {self.throttle.rate_per_s:g}/s; "
                    "this is the latest of them"
                )
                fields = Reject(last, "rate_limited", detail, targets.get(route)).fields()
                pipe.xadd(core_keys.REJECTED, fields, maxlen=10_000, approximate=True)  # type: ignore[arg-type]
                log.warning("ingest_rate_limited", topic=last.topic[:200], dropped=sampled)
        pipe.execute()

    def _send(
        self, items: list[Pending | Reject], intended: set[int], *, after: Any = None
    ) -> Sent:
        """One pipeline for a write attempt, sent; ``_receive`` reads what it did.

        The uplinks go in store calls of ``ITEMS_PER_CALL`` (on a cluster, per hash slot), in
        arrival order; dead letters in calls of their own (they are not any elder's).
        ``after``: the pipeline of a batch in flight, which this one follows.
        """
        if self.evaluator is not None and after is None:
            # A batch in flight keeps its guesses: this one's evaluations build on them.
            self.evaluator.begin()
            self.evaluator.ensure_loaded(
                {
                    i.target.elder_id
                    for i in items
                    if isinstance(i, Pending) and isinstance(i.uplink, Fix)
                }
            )
        rejects = [i for i in items if isinstance(i, Reject)]
        pendings = [i for i in items if isinstance(i, Pending)]
        elders = {i.target.elder_id for i in pendings}
        intended |= elders
        # A streaming batch on one Redis: Redis starts on it while it is built. Intents of
        # a batch in flight are not released here: it releases them when it is finished.
        flying = self._flying()
        pipe, marks = relay.mark_first(
            self._redis,
            elders,
            token=self._relay_token,
            now=self._clock.time(),
            done=self._unmark - elders - flying,
            after=after,
        )
        self._unmark &= flying
        pipe.get(keys.DEVICES_VERSION)
        if self.evaluator is not None:
            pipe.get(self.evaluator.version_key)
        for item in rejects:
            fields = item.fields()
            DEAD_LETTER_SCRIPT.queue(
                pipe,
                keys=[
                    core_keys.REJECTED,
                    core_keys.REJECTED_COUNTS,
                    core_keys.rejected_seen(item.identity()),
                ],
                args=[x for pair in fields.items() for x in pair],
            )
        calls = []
        for call in self._calls(pendings):
            # Queued as soon as built: on one Redis the pipeline sends it while the next
            # is being prepared.
            self._script.queue_items(pipe, [(k, a) for _, k, a in call])
            calls.append(call)
        send = getattr(pipe, "send", None)
        if send is not None:
            send()  # the whole attempt goes out now (a cluster pipeline waits for execute)
        return Sent(pipe, marks, rejects, calls, intended)

    def _receive(self, sent: Sent, outcome: BatchOutcome) -> list[Pending]:
        """Read a write attempt's replies; returns uplinks whose binding or zone state moved."""
        rejects, calls = sent.rejects, sent.calls
        results = iter(sent.pipe.execute(raise_on_error=False))
        for _ in range(sent.marks):
            mark = next(results)
            if isinstance(mark, Exception):
                raise mark
        version = next(results)
        if isinstance(version, Exception):
            raise version
        # Registrations change rarely; a change seen here refreshes the cache for the next batch.
        self.routes.observe_version(int(version or 0))
        if self.evaluator is not None:
            zones_version = next(results)
            if not isinstance(zones_version, Exception):
                self.evaluator.observe_version(int(zones_version or 0))
        stale: list[Pending] = []
        retry: list[Pending | Reject] = []
        for item in rejects:
            result = next(results)
            if isinstance(result, redis.exceptions.NoScriptError):
                retry.append(item)
            elif isinstance(result, Exception):
                raise result
            elif result:  # 0: the same rejected message again (a redelivery), not counted twice
                self._count_reject(outcome, item.reason)
        failed: Exception | None = None
        for call in calls:
            replies = next(results)
            if isinstance(replies, redis.exceptions.NoScriptError):
                retry += [pending for pending, _, _ in call]
                continue
            if isinstance(replies, Exception):
                raise replies
            for (pending, _, _), result in zip(call, replies, strict=True):
                if isinstance(result, Exception):
                    # The others ran: record them (their zone updates settle), then raise.
                    failed = failed or result
                else:
                    self._record(pending, result, outcome, stale)
        if failed is not None:
            raise failed
        if retry:
            # Redis restarted and lost its script cache: load it again and redo those.
            self._load_scripts()
            stale += self._receive(self._send(retry, sent.intended), outcome)
        return stale

    def _calls(self, pendings: list[Pending]) -> Iterator[list[Call]]:
        """The store calls for a batch's uplinks, each a list of (uplink, keys, args).

        Items of one hash slot share a call, at most ``ITEMS_PER_CALL``: on one Redis every
        item is in the same "slot", so the calls follow arrival order and each is yielded
        once full; on a cluster her keys share her slot, so an elder's uplinks stay in order
        in one call.
        """
        groups: dict[int, list[Call]] = {}
        for pending in pendings:
            script_keys, args = self._script_call(pending)
            slot = slot_of(script_keys[0]) if self._cluster else 0
            group = groups.setdefault(slot, [])
            group.append((pending, script_keys, args))
            if len(group) == ITEMS_PER_CALL:
                yield groups.pop(slot)
        yield from groups.values()

    def _record(
        self, item: Pending, result: Any, outcome: BatchOutcome, stale: list[Pending]
    ) -> None:
        verdict, detail = result[0], result[1]
        if not isinstance(verdict, str):  # a client without decode_responses
            verdict, detail = verdict.decode(), detail.decode()
        if verdict == "stale_route":
            stale.append(item)
            return
        if len(result) > 2 and result[2]:
            relay.merge(self._relays, item.target.elder_id, result[2])
        update = item.zone_update
        if self.evaluator is not None and update is not None:
            applied = detail == "zones"
            self.evaluator.settle(update, applied=applied)
            if applied and getattr(update, "leaving", False):
                outcome.leaving.append((item.target.elder_id, item.target.device_id))
        if verdict == "zone_conflict":
            # Someone else moved this elder's zone state: reload and evaluate again.
            stale.append(item)
            return
        if verdict in ("duplicate", "too_fast"):
            self._count_reject(outcome, verdict)
            return
        outcome.outcomes[verdict] += 1
        if isinstance(item.uplink, Fix):
            outcome.fixes.append((item, verdict))
            if update is not None and getattr(update, "unsure", False):
                slow = is_slow(item.target.report_interval_s)
                if slow or is_low_quality(item.uplink):
                    outcome.unsure.append((item.target.elder_id, item.target.device_id, slow))

    def _script_call(self, item: Pending) -> tuple[list[str], list[str]]:
        return store_call(
            item,
            evaluator=self.evaluator,
            retention_ms=self._retention_ms,
            max_speed=self._max_speed,
            low_battery=self._low_battery,
            offline_after_s=self._offline_after_s,
        )
