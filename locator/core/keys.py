"""The shell's and core's Redis keys, and the hash-tag rules every domain's keys follow.

Each domain owns its own keys (``devices/keys.py``, ``geofences/keys.py``, ``alerts/keys.py``;
import-linter lets only the owner import them); what is here belongs to no domain: the
prefix and tags, sequences, tokens and sessions, the relay, timers, shards, dead letters,
heartbeats and stats.

Per-elder keys carry the hash tag ``{e:<elder_id>}`` so a Redis Cluster keeps one elder's
state in one slot and a script touching one elder touches one slot. What many elders feed
(alarm streams, timers, the retention index) is split into shards tagged ``{s:<n>}``
(``locator/core/shards.py``); a per-elder script never writes a shard key: it leaves its
global effects on her relay list, which the caller applies (``locator/core/relay.py``).
"""

from __future__ import annotations

import re

from locator.core import shards

PREFIX = "hw:"


def elder_tag(elder_id: int) -> str:
    return f"{{e:{elder_id}}}"


def sequence(kind: str) -> str:
    return f"hw:seq:{kind}"


def token(token_hash: str) -> str:
    return f"hw:token:{token_hash}"


TOKENS = "hw:tokens"  # before token ids: zset token hash -> created epoch (migrated away)


TOKEN_IDS = "hw:tokens:ids"  # noqa: S105 (a key name): zset token hash -> token id


def token_sessions(token_hash: str) -> str:
    """Set of the web sessions opened with a token: revoking the token ends them too."""
    return f"hw:token:{token_hash}:sessions"


def session(session_hash: str) -> str:
    """A web session (cookie) -> the principal and the token it was opened with; expires."""
    return f"hw:session:{session_hash}"


BOOTSTRAP_ADMIN = "hw:bootstrap:admin"


# --- the relay and what many elders feed, split so a cluster spreads it (shards.py) ------


def relay(elder_id: int) -> str:
    """List of her script's global effects not yet applied to the shards (relay.py)."""
    return f"hw:{elder_tag(elder_id)}:relay"


def relay_pending(shard: int) -> str:
    """Set of the shard's elders whose relay may hold effects: the ticker's sweep finishes them."""
    return f"hw:{shards.tag(shard)}:relay-pending"


# The alarm streams are their owners' (geofences' transitions, devices' device events,
# alerts' outbox): their shape is here because the relay, the trimming and the migration
# (core) write and trim them by name without importing a domain.
ALARM_SHARD_STREAMS = ("transitions", "device-events")  # relay kinds, one stream per shard


def shard_stream(name: str, shard: int) -> str:
    """A shard of an alarm stream (``transitions``, ``device-events``)."""
    return f"hw:{shards.tag(shard)}:stream:{name}"


def stream(name: str) -> str:
    """An unsharded stream (``outbox``, ``feed``)."""
    return f"hw:stream:{name}"


# Dead letters share one tag so the dead-letter script (stream, counts, seen marker) is one
# slot; they are written outside the per-elder script, and rare (floods are sampled).
REJECTED = "hw:{rejected}:stream"  # dead-lettered uplinks, capped
REJECTED_COUNTS = "hw:{rejected}:counts"  # hash reason -> count since the store was created


def retention_streams(shard: int) -> str:
    """Retention index of the shard's elders: per-elder stream of fixes or events (track,
    events, transitions) -> its oldest entry's arrival (epoch s), so the sweep needs no SCAN."""
    return f"hw:{shards.tag(shard)}:retention:streams"


def retention_streams_of(stream: str) -> str:
    """The retention index a per-elder stream belongs in (its elder's shard)."""
    return retention_streams(shards.shard_of(elder_of(stream)))


_ELDER_KEY = re.compile(r"^hw:\{e:(\d+)\}:")


def elder_of(key: str) -> int:
    """The elder of a per-elder key (ValueError for any other key)."""
    match = _ELDER_KEY.match(key)
    if match is None:
        raise ValueError(f"not a per-elder key: {key!r}")
    return int(match.group(1))


# --- timers (delayed jobs: a sorted set scored by due time, as in arq) --------------------
def timers(shard: int) -> str:
    """A shard's jobs: zset member = job id ("kind|arg|arg"), score = due epoch seconds."""
    return f"hw:{shards.tag(shard)}:timers"


def job_timers(job_id: str) -> str:
    """The timer set holding a job (its shard's)."""
    return timers(shards.shard_of_job(job_id))


def timer_prefix(shard: int) -> str:
    return f"hw:{shards.tag(shard)}:timer:"


def timer(job_id: str) -> str:
    """A job's token and payload, beside its timer set; absent for jobs that need neither."""
    return timer_prefix(shards.shard_of_job(job_id)) + job_id


LEGACY_TIMERS = "hw:timers"  # before shards: one set (moved into the shards at start)


def rejected_seen(identity: str) -> str:
    """Marks a rejected message as dead-lettered for an hour, so a redelivery is not counted."""
    return f"hw:{{rejected}}:seen:{identity}"


# --- watching the watcher -------------------------------------------------------------------
LAYOUT = "hw:layout"  # hash "shards" -> the shard count the store was written with
HEARTBEATS = "hw:heartbeats"  # hash loop name -> JSON {at, host, pid, ...}
SYSTEM_STATE = "hw:system:state"  # "ok" | "degraded": the last state put on the feed
# hash "<stream>|<group>" -> entries found deleted under a pending read; "at" -> last time
STREAM_LOST = "hw:stats:stream-lost"


def login_failures(client: str) -> str:
    """Failed token logins (bearer or session) from one client address; expires with its window."""
    return f"hw:loginfail:{client}"
