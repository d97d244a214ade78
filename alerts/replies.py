"""Answers that come back by SMS and by voice, and what Twilio says happened to a message.

Parsing is pure (``alerts.notify.messages.parse_reply``); here a phone number becomes a
volunteer or a guardian, an answer becomes an incident action through the same service the
API uses (channel ``sms`` / ``voice`` on the timeline), and a status callback updates the
attempt and, when the message did not arrive, moves that recipient to the next channel.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

from alerts import escalation, keys
from alerts.incidents import reads, storage
from alerts.incidents import service as incidents
from alerts.incidents.config import AlertsConfig
from alerts.notify.attempts import read_attempt
from alerts.notify.messages import drill_prefix, parse_reply, reply
from alerts.notify.outbox import fall_back
from devices.elders.service import read_elder
from locator.core.auth import Principal, Role
from locator.core.errors import HomewardError
from locator.core.logging import get_logger

log = get_logger(__name__)

VOICE_ACTIONS = ("1", "2")  # keys that accept or decline; others only repeat
SEEN_TTL_S = 3 * 86400  # longer than Twilio retries a webhook
# A guardian's SMS cancel: six digits (incident codes have four), ten minutes, five guesses.
CONFIRM_DIGITS = 6
CONFIRM_TTL_S = 600
CONFIRM_TRIES = 5

# Twilio's final statuses that mean the person did not get the message or call.
NOT_REACHED = frozenset({"undelivered", "failed", "no-answer", "busy", "canceled"})
REACHED = {"delivered": "delivered", "completed": "answered", "read": "delivered"}


def _open_alerts(client: redis.Redis, volunteer_id: int, action: str) -> dict[str, int]:
    """code -> incident id of the open incidents this volunteer can still answer."""
    allowed = (
        escalation.MAY_ACCEPT
        if action == "accept"
        else frozenset({escalation.NOTIFIED, escalation.STOOD_DOWN})
    )
    out: dict[str, int] = {}
    for raw in client.zrevrange(keys.volunteer_incidents(volunteer_id), 0, 50):
        incident_id = int(str(raw))
        if client.zscore(keys.INCIDENTS_OPEN, incident_id) is None:
            continue
        snap = storage.load(client, incident_id)
        state = snap.responders.get(volunteer_id, {}).get("state")
        if state in allowed or (action == "accept" and state in escalation.ENGAGED):
            out[snap.fields["code"]] = incident_id
    return out


def _guardian_incidents(client: redis.Redis, phone: str) -> dict[str, tuple[int, int, int]]:
    """code -> (incident, elder, guardian index) of open incidents listing this phone."""
    out: dict[str, tuple[int, int, int]] = {}
    for raw in client.zrange(keys.INCIDENTS_OPEN, 0, -1):
        incident_id = int(str(raw))
        elder_id = storage.elder_of(client, incident_id)
        elder = read_elder(client, elder_id=elder_id)
        phones = [g.phone for g in elder.guardians] if elder else []
        if phone in phones:
            code = client.hget(keys.incident(elder_id, incident_id), "code")
            out[str(code)] = (incident_id, elder_id, phones.index(phone))
    return out


def _name(client: redis.Redis, elder_id: int) -> str:
    elder = read_elder(client, elder_id=elder_id)
    return elder.name if elder else ""


def _pick(candidates: dict[str, int], code: str | None, locale: str) -> tuple[int | None, str]:
    if code is not None:
        if code in candidates:
            return candidates[code], ""
        return None, reply("none", locale, {})
    if len(candidates) == 1:
        return next(iter(candidates.values())), ""
    if not candidates:
        return None, reply("none", locale, {})
    return None, reply("which", locale, {"codes": " / ".join(sorted(candidates))})


def sms_reply(client: redis.Redis, cfg: AlertsConfig, *, phone: str, body: str) -> str:
    """Handle an SMS answer; returns the text to reply with."""
    parsed = parse_reply(body)
    locale = cfg.locale
    if parsed is None:
        return reply("unknown", locale, {})
    action, code = parsed
    volunteer = client.hget(keys.VOLUNTEER_PHONES, phone)
    if volunteer is not None and action in ("accept", "decline"):
        vid = int(str(volunteer))
        incident_id, problem = _pick(_open_alerts(client, vid, action), code, locale)
        if incident_id is None:
            return problem
        caller = Principal(role=Role.VOLUNTEER, subject=str(vid))
        try:
            snap = incidents.answer(
                client,
                cfg,
                caller=caller,
                incident_id=incident_id,
                action="ack" if action == "accept" else "decline",
                channel="sms",
            )
        except HomewardError as exc:
            return reply("not_allowed", locale, {"detail": exc.detail})
        key = "accepted" if action == "accept" else "declined"
        marker = drill_prefix(locale) if snap.drill else ""  # a drill's answer says so too
        return marker + reply(key, locale, {"code": snap.fields["code"]})
    if action == "safe":
        return _guardian_cancel(client, cfg, phone=phone, code=code)
    return reply("none", locale, {})


def first_time(client: redis.Redis, *, kind: str, ident: str) -> bool:
    """Claim a signed webhook (MessageSid, call keypress, status): False if seen before."""
    if not ident:
        return False  # nothing to tell a replay by: act on nothing
    return bool(client.set(keys.twilio_seen(kind, ident), "1", nx=True, ex=SEEN_TTL_S))


def forget(client: redis.Redis, *, kind: str, ident: str) -> None:
    """Release a claim whose handling failed, so Twilio's retry is acted on."""
    client.delete(keys.twilio_seen(kind, ident))


def _guardian_cancel(
    client: redis.Redis, cfg: AlertsConfig, *, phone: str, code: str | None
) -> str:
    """A guardian's "0" gets a confirmation code by SMS; only "0 <that code>" cancels.

    A sender number can be spoofed; the code goes to the real phone, so whoever cannot
    read that phone's messages cannot cancel a search.
    """
    locale = cfg.locale
    mine = _guardian_incidents(client, phone)
    if code is not None and len(code) == CONFIRM_DIGITS:
        for incident_id, elder_id, guardian in mine.values():
            key = keys.cancel_confirmation(elder_id, incident_id, guardian)
            if not secrets.compare_digest(str(client.hget(key, "code") or ""), code):
                continue
            if not client.delete(key):
                break  # another request used it meanwhile
            snap = incidents.guardian_says_safe(
                client, cfg, incident_id=incident_id, guardian=guardian
            )
            name = _name(client, elder_id)
            return reply("safe", locale, {"name": name, "code": snap.fields["code"]})
        for incident_id, elder_id, guardian in mine.values():
            key = keys.cancel_confirmation(elder_id, incident_id, guardian)
            if client.exists(key) and client.hincrby(key, "tries", 1) >= CONFIRM_TRIES:
                client.delete(key)  # guessing: the guardian asks for a new code
        return reply("bad_confirm", locale, {})
    chosen, problem = _pick({c: v[0] for c, v in mine.items()}, code, locale)
    if chosen is None:
        return problem
    _, elder_id, guardian = next(v for v in mine.values() if v[0] == chosen)
    confirm = f"{secrets.randbelow(9 * 10 ** (CONFIRM_DIGITS - 1)) + 10 ** (CONFIRM_DIGITS - 1)}"
    key = keys.cancel_confirmation(elder_id, chosen, guardian)
    pipe = client.pipeline()
    pipe.delete(key)
    pipe.hset(key, mapping={"code": confirm, "tries": 0})
    pipe.expire(key, CONFIRM_TTL_S)
    pipe.execute()
    name = _name(client, elder_id)
    code_of = str(client.hget(keys.incident(elder_id, chosen), "code") or "")
    return reply("confirm_cancel", locale, {"name": name, "code": code_of, "confirm": confirm})


def voice_answer(
    client: redis.Redis, cfg: AlertsConfig, *, attempt: str, digits: str | None, no_input: bool
) -> tuple[str, str | None]:
    """The voice step's answer: (what happened, text to say then hang up) or a repeat (None)."""
    doc = read_attempt(client, attempt)
    if doc is None or doc.incident_id is None:
        return "gone", reply("voice_gone", cfg.locale, {})
    incident_id = doc.incident_id
    kind, _, ident = doc.recipient.partition(":")
    snap = storage.load(client, incident_id)
    if snap.status not in escalation.ACTIVE or kind != "volunteer":
        return "gone", reply("voice_gone", cfg.locale, {})
    caller = Principal(role=Role.VOLUNTEER, subject=ident)
    if no_input:
        incidents.note(
            client,
            cfg,
            incident_id=incident_id,
            actor=f"volunteer:{ident}",
            channel="voice",
            entry={"type": "no_answer", "volunteer_id": int(ident)},
        )
        return "no_answer", reply("voice_no_input", cfg.locale, {})
    if digits in VOICE_ACTIONS:
        action = "ack" if digits == "1" else "decline"
        try:
            incidents.answer(
                client, cfg, caller=caller, incident_id=incident_id, action=action, channel="voice"
            )
        except HomewardError as exc:
            return "refused", str(exc.detail)
        key = "voice_accepted" if digits == "1" else "voice_declined"
        return action, reply(key, cfg.locale, {})
    return "repeat", None


def script(client: redis.Redis, cfg: AlertsConfig, *, attempt: str) -> str:
    """What the call says before the keypad prompt."""
    doc = read_attempt(client, attempt)
    if doc is None or doc.incident_id is None:
        return reply("voice_gone", cfg.locale, {})
    return reads.voice_script(client, cfg, incident_id=doc.incident_id)


def status_callback(
    client: redis.Redis, cfg: AlertsConfig, *, attempt: str, params: dict[str, Any]
) -> str:
    """Twilio says what became of a message or call; not reached → the next channel."""
    doc = read_attempt(client, attempt)
    if doc is None:
        return "unknown_attempt"
    status = str(params.get("MessageStatus") or params.get("CallStatus") or "")
    sid = str(params.get("MessageSid") or params.get("CallSid") or "")
    if doc.provider_id and sid and doc.provider_id != sid:
        return "other_sid"
    now = cfg.clock.time()
    fields: dict[Any, Any] = {"delivery": status, "updated": repr(now)}
    if params.get("ErrorCode"):
        fields["error"] = f"twilio {params['ErrorCode']}: {status}"
    if status in NOT_REACHED:
        fields["status"] = "no_answer" if doc.channel == "voice" else "undelivered"
    elif status in REACHED:
        fields["status"] = REACHED[status]
    nxt = None
    if status in NOT_REACHED:
        # The next channel first: a crash before the record below then costs a stale
        # status, never the recipient's fallback (queueing it is idempotent).
        nxt = fall_back(client, attempt, available=set(cfg.channels), now=now)
    client.hset(keys.attempt(attempt), mapping=fields)
    if "status" in fields:
        client.hincrby(keys.NOTIFICATION_STATS, f"{doc.channel}:{fields['status']}", 1)
    if status in NOT_REACHED:
        log.info("notification_not_reached", attempt=attempt, status=status, next=nxt)
        return f"fallback:{nxt}"
    return status
