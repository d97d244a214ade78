"""The outbox: notification attempts queued on a Redis stream, delivered by a consumer group.

An attempt id is (scope, step, recipient, channel), created at most once, so a step
replayed after a crash never pages the same person twice on the same channel. Delivery
marks an attempt ``sending`` before calling the channel: finding it still ``sending`` on a
redelivery means the process died between the provider's answer and recording it, and the
fate of that message is unknown, so the next channel is tried instead of resending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import Counter, Gauge

from alerts import keys
from alerts.notify.attempts import Attempt, read_attempt
from alerts.notify.channels import Channel, Message, Result, chain_for
from locator.core import keys as core_keys
from locator.core import streams, timers
from locator.core.logging import get_logger
from locator.core.redis import stream_reply
from locator.core.scripts import Script

log = get_logger(__name__)

GROUP = "delivery"
# Best-effort channels get their own consumer group and worker: a push service that answers
# slowly must never hold an SMS or a call queued behind it.
EXTRA_GROUP = "delivery-extra"
EXTRA_CHANNELS = frozenset({"mqtt", "webpush"})
MAX_TRIES = 4
RETRY_BASE_S = 2.0
CLAIM_IDLE_MS = 30_000

ATTEMPTS_TOTAL = Counter(
    "homeward_notifications_total", "Notification attempts by outcome", ["channel", "status"]
)
OUTBOX_PENDING = Gauge("homeward_outbox_pending", "Outbox entries read but not yet acknowledged")

_ENQUEUE = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[4])
local f = {'seq', tostring(seq), 'status', 'queued', 'tries', '0', 'created', ARGV[3]}
for k, v in pairs(cjson.decode(ARGV[2])) do table.insert(f, k); table.insert(f, tostring(v)) end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('ZADD', KEYS[3], seq, ARGV[1])
if KEYS[5] ~= KEYS[3] then redis.call('ZADD', KEYS[5], seq, ARGV[1]) end
-- No MAXLEN: the ticker trims the outbox only behind every delivery group.
redis.call('XADD', KEYS[2], '*', 'attempt', ARGV[1])
return 1
""",
    name="outbox_enqueue",
)

_BEGIN = Script(
    """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'retry' then
  redis.call('HSET', KEYS[1], 'status', 'sending', 'updated', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
  return 'go'
end
if status == 'sending' then
  redis.call('HSET', KEYS[1], 'status', 'unknown', 'updated', ARGV[1],
    'error', 'interrupted after sending began: fate unknown, not resent')
  return 'interrupted'
end
return status or 'missing'
""",
    name="outbox_begin",
)

_FINISH = Script(
    """
if redis.call('HGET', KEYS[1], 'status') ~= 'sending' then
  -- Twilio's status callback can arrive before its reply is recorded: keep the callback's
  -- news, add what only the reply knows.
  if ARGV[1] == 'sent' and redis.call('HEXISTS', KEYS[1], 'sent_at') == 0 then
    redis.call('HSET', KEYS[1], 'provider_id', ARGV[3], 'sent_at', ARGV[4])
    redis.call('HINCRBY', KEYS[2], ARGV[5] .. ':sent', 1)
  end
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[2], 'provider_id', ARGV[3],
  'updated', ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[5] .. ':' .. ARGV[1], 1)
if ARGV[1] == 'sent' then redis.call('HSET', KEYS[1], 'sent_at', ARGV[4]) end
return 1
""",
    name="outbox_finish",
)


def outbox_stream() -> str:
    """The stream of attempts to deliver (group ``GROUP``): the watchdog measures its backlog."""
    return keys.OUTBOX


def notification_counts(client: redis.Redis) -> dict[str, int]:
    """Attempts by ``channel:status`` since the store was created (``/metrics``)."""
    stats: Any = client.hgetall(keys.NOTIFICATION_STATS)
    return {str(k): int(v) for k, v in stats.items()}


def enqueue(
    client: redis.Redis | Any,
    *,
    attempt: str,
    fields: dict[str, Any],
    now: float,
    incident_attempts: str | None = None,
) -> None:
    """Queue an attempt unless it exists (pipelines welcome)."""
    _ENQUEUE(
        client,
        keys=[
            keys.attempt(attempt),
            keys.OUTBOX,
            keys.ATTEMPTS,
            core_keys.sequence("attempt"),
            incident_attempts or keys.ATTEMPTS,
        ],
        args=[attempt, json.dumps(fields, ensure_ascii=False), repr(now)],
    )


@dataclass
class Deliverer:
    """The delivery side: reads the outbox as one consumer of the ``delivery`` group."""

    client: redis.Redis
    channels: dict[str, Channel]
    consumer: str
    # None: every attempt; "chain": all but the best-effort extras; "extra": only those.
    lane: str | None = None

    def __post_init__(self) -> None:
        self._claimed_at = 0.0
        self.group = EXTRA_GROUP if self.lane == "extra" else GROUP

    def _mine(self, attempt: str) -> bool:
        if self.lane is None:
            return True
        return (self._channel_of(attempt) in EXTRA_CHANNELS) == (self.lane == "extra")

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(keys.OUTBOX, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run_once(self, *, now: float, block_ms: int = 200) -> int:
        """Deliver what is queued (and what a dead consumer left behind); returns how many."""
        entries: list[tuple[str, dict[str, str]]] = []
        if now - self._claimed_at > CLAIM_IDLE_MS / 1000 / 2:
            self._claimed_at = now
            entries.extend(
                streams.claim(
                    self.client,
                    stream=keys.OUTBOX,
                    group=self.group,
                    consumer=self.consumer,
                    min_idle_ms=CLAIM_IDLE_MS,
                    now=now,
                )
            )
        reply = self.client.xreadgroup(
            self.group, self.consumer, {keys.OUTBOX: ">"}, count=50, block=block_ms
        )
        for _, batch in stream_reply(reply):
            entries.extend(batch)
        # A page deleted before it was sent is an error to see, never a silent ack.
        entries = streams.live_entries(
            self.client, entries, stream=keys.OUTBOX, group=self.group, now=now
        )
        for entry_id, fields in entries:
            if "attempt" in fields and self._mine(fields["attempt"]):
                self.deliver(fields["attempt"], now=now)
            self.client.xack(keys.OUTBOX, self.group, entry_id)
        return len(entries)

    def deliver(self, attempt: str, *, now: float) -> str:
        """One attempt: mark it sending, call its channel, record the result, fall back."""
        verdict = _s(_BEGIN(self.client, keys=[keys.attempt(attempt)], args=[repr(now)]))
        if verdict == "interrupted":
            ATTEMPTS_TOTAL.labels(self._channel_of(attempt), "unknown").inc()
            self.fall_back(attempt, now=now)
            return "unknown"
        if verdict in NOT_REACHED:
            # A crash can come between recording the failure and queueing the next channel;
            # queueing it again is a no-op when it is there already.
            self.fall_back(attempt, now=now)
            return verdict
        if verdict != "go":
            return verdict  # already delivered, or superseded
        doc = read_attempt(self.client, attempt)
        if doc is None:
            return "missing"  # gone between the mark and the read (her erasure)
        channel = self.channels.get(doc.channel)
        moot = _moot(self.client, doc)
        if moot:
            result = Result("superseded", moot)
        elif channel is None:
            result = Result("failed", f"channel {doc.channel} is not configured")
        else:
            try:
                result = channel.send(_message(attempt, doc))
            except Exception as exc:  # a channel bug must not stop every other page
                log.exception("channel_crashed", attempt=attempt)
                result = Result("failed", f"{type(exc).__name__}: {exc}")
        tries = doc.tries or 1
        status: str = result.outcome
        if status == "transient":
            status = "retry" if tries < MAX_TRIES else "failed"
        _FINISH(
            self.client,
            keys=[keys.attempt(attempt), keys.NOTIFICATION_STATS],
            args=[status, result.detail, result.provider_id, repr(now), doc.channel],
        )
        ATTEMPTS_TOTAL.labels(doc.channel, status).inc()
        log.info("notification", attempt=attempt, status=status, detail=result.detail)
        if status == "retry":
            timers.schedule(
                self.client,
                timers.job_id("deliver", attempt),
                due=now + RETRY_BASE_S * 2 ** (tries - 1),
            )
        elif status in ("failed", "unknown"):
            self.fall_back(attempt, now=now)
        return status

    def fall_back(self, attempt: str, *, now: float) -> str | None:
        """Queue the same message on the recipient's next channel; None when none is left."""
        return fall_back(self.client, attempt, available=set(self.channels), now=now)

    def _channel_of(self, attempt: str) -> str:
        return attempt.rsplit(".", 1)[-1]


# Attempt states from which the recipient is owed the next channel.
NOT_REACHED = frozenset({"failed", "unknown", "undelivered", "no_answer"})
# Messages that ask someone to act: pointless, even harmful, once nobody needs them to.
CALLS_TO_ACT = frozenset(
    {"alert", "voice_call", "team_call", "dispatcher_call", "wide_call", "lead_call"}
)


def _moot(client: redis.Redis, doc: Attempt) -> str | None:
    """Why a queued call to act must not go out any more (a retry or fallback came late)."""
    if doc.template not in CALLS_TO_ACT or doc.incident_id is None:
        return None
    elder_id, incident_id = doc.elder_id, doc.incident_id
    status = client.hget(keys.incident(elder_id, incident_id), "status")
    if status in ("resolved", "cancelled"):
        return f"incident {status}"
    kind, _, ident = doc.recipient.partition(":")
    if kind == "volunteer":
        raw = client.hget(keys.incident_responders(elder_id, incident_id), ident)
        state = json.loads(raw).get("state") if raw else None
        # The team lead is called at the on-site deadline even when standing by, not when
        # already coming or there.
        if doc.template == "lead_call":
            if state in ("accepted", "arrived"):
                return f"volunteer already {state}"
        elif state is not None and state != "notified":
            return f"volunteer already {state}"
    return None


def fall_back(client: redis.Redis, attempt: str, *, available: set[str], now: float) -> str | None:
    """The recipient's next channel gets the message (an extra channel has none)."""
    doc = read_attempt(client, attempt)
    if doc is None or doc.extra:
        return None  # gone, or best effort only: the chain carries the guarantee
    chain = chain_for(doc.recipient, available, start=doc.channel)
    rest = chain[1:] if chain and chain[0] == doc.channel else chain
    if not rest:
        log.warning("notification_unreachable", attempt=attempt, recipient=doc.recipient)
        return None
    nxt = doc.on(rest[0])
    enqueue(
        client,
        attempt=nxt.id,
        fields=nxt.record(),
        now=now,
        incident_attempts=_incident_attempts(doc),
    )
    return nxt.id


def _incident_attempts(doc: Attempt) -> str | None:
    if doc.incident_id is not None:
        return keys.incident_attempts(doc.elder_id, doc.incident_id)
    return None


def _message(attempt: str, doc: Attempt) -> Message:
    return Message(
        attempt_id=attempt,
        recipient=doc.recipient,
        phone=doc.phone or None,
        template=doc.template,
        text=doc.text,
        data=json.loads(doc.data),
        locale=doc.locale,
    )


def requeue(client: redis.Redis, attempt: str) -> str:
    """The ticker's ``deliver`` job: a transient failure's backoff is over, try again."""
    if client.hget(keys.attempt(attempt), "status") != "retry":
        return "skipped"
    client.xadd(keys.OUTBOX, {"attempt": attempt})  # trimmed behind the groups (ticker)
    return "requeued"


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
