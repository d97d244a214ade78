"""Every Redis key pattern of the service, in one place.

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


# --- sequences -------------------------------------------------------------------------
def sequence(kind: str) -> str:
    return f"hw:seq:{kind}"


# --- elders (devices domain: bracelets and their wearers) -------------------------------
ELDERS = "hw:elders"  # zset id -> id, every live elder


def elder(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:elder"


def elder_device(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:device"


def access_log(elder_id: int) -> str:
    """Stream (ids = app-clock ms) of who read or changed her data; trimmed by time."""
    return f"hw:{elder_tag(elder_id)}:access"


def access_log_recent(elder_id: int, digest: str) -> str:
    """When (app-clock ms) a read was last logged: a page's 15 s polls log it once."""
    return f"hw:{elder_tag(elder_id)}:access:recent:{digest}"


def owner_elders(owner: str) -> str:
    return f"hw:owner:{owner}:elders"


# --- devices ---------------------------------------------------------------------------
DEVICES = "hw:devices"  # zset (score 0) of device ids, lexicographic


def device(device_id: str) -> str:
    return f"hw:device:{device_id}"


def device_external(protocol: str, external_id: str) -> str:
    return f"hw:device:ext:{protocol}:{external_id}"


# Bracelets in stock: a record per bracelet that has a claim code (kept while it is bound,
# so unbinding returns it with the same code), and the set of those not bound right now.
DEVICE_STOCK = "hw:stock"  # zset (score 0) of unbound stocked device ids, lexicographic


def device_stock(device_id: str) -> str:
    """Hash: protocol, hash of the claim code printed on the box, created_at."""
    return f"hw:stock:device:{device_id}"


def claim_attempts(device_id: str) -> str:
    """Claim attempts on one bracelet in the current hour (429 past the limit)."""
    return f"hw:stock:claims:{device_id}"


def device_state(elder_id: int, device_id: str) -> str:
    """last_seen, battery, online: written by the ingest in the same commit as the fix."""
    return f"hw:{elder_tag(elder_id)}:devstate:{device_id}"


def track(elder_id: int, device_id: str) -> str:
    return f"hw:{elder_tag(elder_id)}:track:{device_id}"


_TRACK = re.compile(r"^hw:\{e:(\d+)\}:track:(.+)$")


def track_owner(key: str) -> tuple[int, str] | None:
    """(elder_id, device_id) of a track key; None for any other key."""
    match = _TRACK.match(key)
    return (int(match.group(1)), match.group(2)) if match else None


def last_position(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:pos"


# --- TCP gateway (devices domain): per-bracelet keys share the hash tag {d:<device_id>} -----
def device_tag(device_id: str) -> str:
    return f"{{d:{device_id}}}"


def gateway_device(device_id: str) -> str:
    """Hash: auth_code (JT/T 808), gateway/connected_at/disconnected_at, last_command(_at),
    last_answer(_at): what the console shows about a gateway bracelet."""
    return f"hw:gw:{device_tag(device_id)}:state"


def gateway_holder(device_id: str) -> str:
    """The gateway process holding the bracelet's connection (expires unless refreshed)."""
    return f"hw:gw:{device_tag(device_id)}:holder"


def gateway_pending(device_id: str) -> str:
    """Hash action -> command JSON waiting for the bracelet's next connection (10 min)."""
    return f"hw:gw:{device_tag(device_id)}:pending"


# --- geofences -------------------------------------------------------------------------
def zones(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:zones"


def zone_state(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:zonestate"


def pause(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:pause"


# --- responders (alerts domain) --------------------------------------------------------
# A volunteer's record, the id index and the phone -> id map share the tag {vol} (and a
# dispatcher's theirs, {disp}): a phone stays unique in one transaction on a cluster too.
# Records written before the tags are renamed once (locator/core/migrate.py).
VOLUNTEERS = "hw:{vol}:volunteers"
VOLUNTEER_PHONES = "hw:{vol}:volunteers:phones"  # hash E.164 phone -> volunteer id
VOLUNTEER_GEO = "hw:volunteers:geo"  # GEO set of shared locations


def volunteer(volunteer_id: int) -> str:
    return f"hw:{{vol}}:volunteer:{volunteer_id}"


def volunteer_location(volunteer_id: int) -> str:
    return f"hw:volunteer:{volunteer_id}:loc"


def pair(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:pair"


def volunteer_pairs(volunteer_id: int) -> str:
    """Reverse index: elders a volunteer is paired with."""
    return f"hw:volunteer:{volunteer_id}:pairs"


TEAMS = "hw:teams"


def team(team_id: int) -> str:
    return f"hw:team:{team_id}"


DISPATCHERS = "hw:{disp}:dispatchers"
DISPATCHER_PHONES = "hw:{disp}:dispatchers:phones"


def dispatcher(dispatcher_id: int) -> str:
    return f"hw:{{disp}}:dispatcher:{dispatcher_id}"


# --- auth ------------------------------------------------------------------------------
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


def elder_readers(elder_id: int) -> str:
    """Volunteers sent an incident about this elder: they may read the elder (alerts writes)."""
    return f"hw:{elder_tag(elder_id)}:readers"


# --- ingest ------------------------------------------------------------------------------
def fix_dedupe(elder_id: int, device_id: str) -> str:
    """Recent fix ids of a device (zset by fix time), so a redelivered fix is not stored twice."""
    return f"hw:{elder_tag(elder_id)}:dedupe:{device_id}"


def elder_events(elder_id: int) -> str:
    """The elder's own capped stream of device events (alarms, low battery, last will)."""
    return f"hw:{elder_tag(elder_id)}:events"


def relay(elder_id: int) -> str:
    """List of her script's global effects not yet applied to the shards (relay.py)."""
    return f"hw:{elder_tag(elder_id)}:relay"


# --- shards: what many elders feed, split so a cluster spreads it (shards.py) -------------
def device_events(shard: int) -> str:
    """A shard of the device events the alerts stage consumes (group ``alerts``)."""
    return f"hw:{shards.tag(shard)}:stream:device-events"


def relay_pending(shard: int) -> str:
    """Set of the shard's elders whose relay may hold effects: the ticker's sweep finishes them."""
    return f"hw:{shards.tag(shard)}:relay-pending"


# Dead letters share one tag so the dead-letter script (stream, counts, seen marker) is one
# slot; they are written outside the per-elder script, and rare (floods are sampled).
REJECTED = "hw:{rejected}:stream"  # dead-lettered uplinks, capped
REJECTED_COUNTS = "hw:{rejected}:counts"  # hash reason -> count since the store was created
DEVICES_VERSION = "hw:devices:version"  # bumped on every (un)registration: ingest cache check


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


def archive_mark(shard: int) -> str:
    """The track mover's place in the shard's retention index: the score it has looked up to."""
    return f"hw:{shards.tag(shard)}:archive:mark"


def elder_track_devices(elder_id: int) -> str:
    """Every device that ever reported for this elder (their tracks outlive the binding)."""
    return f"hw:{elder_tag(elder_id)}:trackdevices"


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


def elder_transitions(elder_id: int) -> str:
    """The elder's capped stream of zone transitions (zone_exit, zone_enter, danger_enter)."""
    return f"hw:{elder_tag(elder_id)}:transitions"


ZONES_VERSION = "hw:zones:version"  # bumped on every zone or pause change: evaluator cache


def transitions(shard: int) -> str:
    """A shard of the zone transitions the alerts stage consumes (group ``alerts``)."""
    return f"hw:{shards.tag(shard)}:stream:transitions"


def fast_mode(elder_id: int) -> str:
    """Set while an elder's bracelet reports fast after a first fix outside (one window)."""
    return f"hw:{elder_tag(elder_id)}:fastmode"


def elder_photo(elder_id: int) -> str:
    """Hash: an uploaded photo of the elder (``type``, base64 ``data``, ``sha``)."""
    return f"hw:{elder_tag(elder_id)}:photo"


def follow_ups(elder_id: int) -> str:
    """Zset of the times an unsure fix made us ask a slow bracelet for one more fix."""
    return f"hw:{elder_tag(elder_id)}:followups"


def open_incident(elder_id: int) -> str:
    """Set by the alerts stage while an incident is open: fast reporting then stays on."""
    return f"hw:{elder_tag(elder_id)}:incident"


def open_drill(elder_id: int) -> str:
    """Her running drill (alerts): apart from ``open_incident`` so a real alarm never joins it."""
    return f"hw:{elder_tag(elder_id)}:drill"


# --- incidents (alerts domain) -----------------------------------------------------------
INCIDENTS = "hw:incidents"  # zset id -> id, every incident
INCIDENTS_OPEN = "hw:incidents:open"  # zset id -> id, incidents not yet resolved or cancelled
INCIDENT_ELDER = "hw:incidents:elder"  # hash incident id -> elder id (locates the hash tag)
INCIDENT_CODES = "hw:incidents:codes"  # hash short code -> incident id, open incidents only
# Closed incidents not yet stripped of names, places and texts, by closing time (retention).
INCIDENTS_CLOSED = "hw:incidents:closed"  # zset incident id -> closed epoch seconds


def incident(elder_id: int, incident_id: int) -> str:
    """Hash: status, deadlines, timestamps, policy snapshot, version, step and step token."""
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}"


def incident_timeline(elder_id: int, incident_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}:timeline"


def incident_responders(elder_id: int, incident_id: int) -> str:
    """Hash volunteer id -> JSON state (notified, accepted, declined, ...)."""
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}:responders"


def incident_sources(elder_id: int, incident_id: int) -> str:
    """Stream ids of the alarms already joined to the incident (a redelivery joins once)."""
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}:sources"


def incident_attempts(elder_id: int, incident_id: int) -> str:
    """Zset of the incident's notification attempt ids, by creation order."""
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}:attempts"


def volunteer_incidents(volunteer_id: int) -> str:
    """Zset incident id -> id: incidents this volunteer was alerted to."""
    return f"hw:volunteer:{volunteer_id}:incidents"


def elder_incidents(elder_id: int) -> str:
    return f"hw:{elder_tag(elder_id)}:incidents"


def missing_reports(reporter: str) -> str:
    """Zset of one guardian's recent missing reports (epoch -> epoch), for the rate limit."""
    return f"hw:reports:missing:{reporter}"


def elder_notices(elder_id: int) -> str:
    """Family-first notices (low battery, offline at home, removed at home): a capped list."""
    return f"hw:{elder_tag(elder_id)}:notices"


# --- notifications ------------------------------------------------------------------------
OUTBOX = "hw:stream:outbox"  # attempt ids to deliver (consumer group "delivery")
ATTEMPTS = "hw:attempts"  # zset attempt id -> sequence, newest last (GET notifications)


def attempt(attempt_id: str) -> str:
    """Hash: recipient, channel, status, error, tries; created once (at most one attempt)."""
    return f"hw:attempt:{attempt_id}"


# --- live event feed ----------------------------------------------------------------------
FEED = "hw:stream:feed"  # every incident change and notice, for SSE and MQTT relay


def stream_ticket(ticket: str) -> str:
    return f"hw:ticket:{ticket}"


def alarm_handled(source: str) -> str:
    """Marks a transition or device event as handled by the alerts stage (for a day)."""
    return f"hw:alarm:handled:{source}"


POLICY = "hw:policy"  # the dispatch policy new incidents snapshot (settings when absent)
LINK_SECRET = "hw:secret:links"  # noqa: S105 (a key name): signs the one-tap links in SMS


def twilio_seen(kind: str, ident: str) -> str:
    """Set once a signed webhook (a MessageSid, a call's keypress) was acted on: no replay."""
    return f"hw:twilio:seen:{kind}:{ident}"


def cancel_confirmation(elder_id: int, incident_id: int, guardian: int) -> str:
    """Hash code, tries: the code a guardian must send back to cancel by SMS (short TTL)."""
    return f"hw:{elder_tag(elder_id)}:inc:{incident_id}:cancel:{guardian}"


def push_subscriptions(volunteer_id: int) -> str:
    """Hash endpoint -> web push subscription JSON."""
    return f"hw:volunteer:{volunteer_id}:push"


# --- watching the watcher -------------------------------------------------------------------
LAYOUT = "hw:layout"  # hash "shards" -> the shard count the store was written with
HEARTBEATS = "hw:heartbeats"  # hash loop name -> JSON {at, host, pid, ...}
SYSTEM_STATE = "hw:system:state"  # "ok" | "degraded": the last state put on the feed
NOTIFICATION_STATS = "hw:stats:notifications"  # hash "channel:status" -> count
# hash "<stream>|<group>" -> entries found deleted under a pending read; "at" -> last time
STREAM_LOST = "hw:stats:stream-lost"


# --- failed logins --------------------------------------------------------------------------
def login_failures(client: str) -> str:
    """Failed token logins (bearer or session) from one client address; expires with its window."""
    return f"hw:loginfail:{client}"
