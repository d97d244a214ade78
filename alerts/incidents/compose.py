"""What an incident says to whom: each notice's texts per recipient and channel, with links.

The attempts built here go into the commit plan (``storage.build``); the texts are rendered
once, when the step fires, so a redelivery sends the very same words.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import redis

from alerts import keys, links
from alerts.escalation import Notice
from alerts.incidents.config import AlertsConfig
from alerts.notify import messages
from alerts.notify.attempts import Attempt
from alerts.notify.channels import chain_for, extras_for
from alerts.notify.messages import render
from devices.elders.records import ElderRecord
from locator.core import crs

LINKED_TEMPLATES = frozenset({"alert", "team_call", "wide_call", "lead_call"})


def _expand(
    client: redis.Redis, recipient: str, elder: ElderRecord
) -> list[tuple[str, str | None]]:
    """A notice's recipient as (recipient id, phone) pairs."""
    if recipient == "guardians":
        return [(f"guardian:{i}", g.phone or None) for i, g in enumerate(elder.guardians)]
    kind, _, ident = recipient.partition(":")
    key = keys.volunteer(int(ident)) if kind == "volunteer" else keys.dispatcher(int(ident))
    raw = client.get(key)
    return [(recipient, json.loads(raw).get("phone") if raw else None)]


def place_hint(elder: ElderRecord, fields: Mapping[str, str], locale: str) -> str:
    """Where to look, in a few characters: distance and direction from home."""
    if elder.home is None or not fields.get("origin_lat"):
        return ""
    home_lat, home_lon = elder.home
    lat, lon = float(fields["origin_lat"]), float(fields["origin_lon"])
    metres = crs.haversine_m(home_lat, home_lon, lat, lon)
    bearing = (
        math.degrees(math.atan2((lon - home_lon) * math.cos(math.radians(lat)), lat - home_lat))
        % 360
    )
    return messages.place(metres, bearing, locale)


def attempts(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    elder: ElderRecord,
    elder_id: int,
    incident_id: int,
    fields: Mapping[str, str],
    changed: Mapping[str, Any],
    notices: list[Notice],
    drill: bool,
    now: float,
) -> list[Attempt]:
    """Each notice as attempts: one per recipient and channel."""
    out: list[Attempt] = []
    code = fields.get("code", "")
    t0 = float(fields.get("t0", now))
    values: dict[str, Any] = {
        "name": elder.name,
        "code": code,
        "minutes": max(0, round((now - t0) / 60)),
        "trigger": messages.trigger_name(fields.get("trigger", ""), cfg.locale),
        # A sighting moves the place in this very change: the message names the new one.
        "place": place_hint(
            elder, {**fields, **{k: str(v) for k, v in changed.items()}}, cfg.locale
        ),
    }
    key = links.secret(client)
    available = set(cfg.channels)
    for notice in notices:
        for recipient, phone in _expand(client, notice.recipient, elder):
            label = notice.step or notice.template
            text_values = dict(values)
            kind, _, ident = recipient.partition(":")
            if kind == "volunteer" and notice.template in LINKED_TEMPLATES:
                token = links.sign(
                    key,
                    incident_id=incident_id,
                    volunteer_id=int(ident),
                    expires=t0 + links.LINK_TTL_S,
                )
                text_values["link"] = links.url(
                    cfg.public_url, incident_id=incident_id, token=token
                )
            chain = chain_for(recipient, available, start=notice.channel)
            extras = [] if notice.channel else extras_for(recipient, available)
            if "webpush" in extras and not client.exists(keys.push_subscriptions(int(ident))):
                extras.remove("webpush")  # nobody subscribed: not even an attempt
            for channel, extra in [*[(c, False) for c in chain[:1]], *[(c, True) for c in extras]]:
                data = {
                    "incident_id": incident_id,
                    "code": code,
                    "elder_id": elder_id,
                    "elder_name": elder.name,
                    **({"drill": True} if drill else {}),
                }
                text = render(notice.template, cfg.locale, text_values, drill=drill)
                if "link" in text_values:
                    # Rendered with the link so an SMS is shortened to fit with it; stored
                    # without: the SMS channel signs it again (alerts/links.py).
                    data["link_expires"] = int(t0 + links.LINK_TTL_S)
                    text = text.replace(text_values["link"], links.placeholder(cfg.locale))
                out.append(
                    Attempt(
                        elder_id=elder_id,
                        incident_id=incident_id,
                        scope=f"i{incident_id}",
                        step=label,
                        recipient=recipient,
                        phone=phone or "",
                        channel=channel,
                        extra=extra,
                        template=notice.template,
                        text=text,
                        data=json.dumps(data, ensure_ascii=False),
                        locale=cfg.locale,
                    )
                )
    return out


def voice_text(cfg: AlertsConfig, *, elder: ElderRecord, fields: Mapping[str, str]) -> str:
    """The spoken alert of the voice step, for an incident's fields as they are now."""
    return render(
        "voice_script",
        cfg.locale,
        {
            "name": elder.name,
            "minutes": max(0, round((cfg.clock.time() - float(fields["t0"])) / 60)),
            "trigger": messages.trigger_name(fields.get("trigger", ""), cfg.locale),
            "place": place_hint(elder, fields, cfg.locale),
        },
        drill=fields.get("drill") == "1",
    )
