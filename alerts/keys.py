"""The alerts domain's Redis keys: responders, incidents, attempts, the outbox, the feed,
notices, links, Twilio replay marks, push subscriptions, stream tickets, the policy, drills
and who may read her record. Only ``alerts`` imports this module (import-linter contract).
The hash-tag rules are ``locator/core/keys.py``'s.
"""

from __future__ import annotations

from locator.core import shards
from locator.core.keys import FEED_TAG, elder_tag, shard_stream, tagged_stream

# A volunteer's record, the id index and the phone -> id map share the tag {vol} (and a
# dispatcher's theirs, {disp}): a phone stays unique in one transaction on a cluster too.
# Records written before the tags are renamed once (alerts/responders/migrate.py).
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


def elder_readers(elder_id: int) -> str:
    """Volunteers sent an incident about this elder: they may read the elder (alerts writes)."""
    return f"hw:{elder_tag(elder_id)}:readers"


def open_incident(elder_id: int) -> str:
    """Set by the alerts stage while an incident is open: fast reporting then stays on."""
    return f"hw:{elder_tag(elder_id)}:incident"


def open_drill(elder_id: int) -> str:
    """Her running drill (alerts): apart from ``open_incident`` so a real alarm never joins it."""
    return f"hw:{elder_tag(elder_id)}:drill"


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


ATTEMPTS = "hw:attempts"  # zset attempt id -> created ms * 1000 + her sequence, newest last


def outbox(shard: int) -> str:
    """A shard of the attempt ids to deliver (consumer groups ``delivery``, ``delivery-extra``)."""
    return shard_stream("outbox", shard)


def outbox_of(attempt_id: str) -> str:
    """The outbox shard an attempt is queued on (its elder's)."""
    return outbox(shards.shard_of(attempt_elder(attempt_id)))


def attempt_elder(attempt_id: str) -> int:
    """The elder an attempt id belongs to: ids start with her id (``attempts.attempt_id``)."""
    return int(attempt_id.split(".", 1)[0])


def attempt(attempt_id: str) -> str:
    """Hash: recipient, channel, status, error, tries; created once (at most one attempt)."""
    return f"hw:{elder_tag(attempt_elder(attempt_id))}:attempt:{attempt_id}"


def attempt_sequence(elder_id: int) -> str:
    """Her attempts' creation counter (orders an incident's attempts; in her slot)."""
    return f"hw:{elder_tag(elder_id)}:seq:attempt"


# One stream on its own tag (core's ``FEED_TAG``: the relay writes it by name), so SSE
# ``Last-Event-ID`` resumes in one id order; core's system state sits beside it.
FEED = tagged_stream(FEED_TAG)  # every incident change and notice, for SSE and MQTT relay


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


NOTIFICATION_STATS = "hw:stats:notifications"  # hash "channel:status" -> count
