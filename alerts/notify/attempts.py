"""A notification attempt: its id, the one builder of its record, and its typed reader.

An incident's pages (``alerts/incidents/compose.py`` into the commit plan), a family notice
(``alerts/intake.py``) and a fallback to the next channel (``outbox.fall_back``) all build
their attempt here, so every attempt in Redis has the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis

from alerts import keys


def attempt_id(*, elder_id: int, scope: str, step: str, recipient: str, channel: str) -> str:
    """The one id of (scope, step, recipient, channel); scope is ``i<incident>`` or ``n<id>``."""
    return f"{elder_id}.{scope}.{step}.{recipient}.{channel}"


@dataclass(frozen=True)
class Attempt:
    """One message to one recipient on one channel, and (once read back) what became of it."""

    elder_id: int
    scope: str
    step: str
    recipient: str
    channel: str
    template: str
    text: str
    locale: str
    phone: str = ""
    incident_id: int | None = None
    data: str = "{}"  # JSON: what the channel carries beside the text (push payloads)
    extra: bool = False  # a best-effort extra channel: no fallback, the chain carries it
    fallback_of: str = ""
    # Written by delivery, not by the builder.
    status: str = ""
    tries: int = 0
    error: str = ""
    provider_id: str = ""
    created: str = ""
    sent_at: str = ""

    @property
    def id(self) -> str:
        """Its id: (scope, step, recipient, channel) under her id."""
        return attempt_id(
            elder_id=self.elder_id,
            scope=self.scope,
            step=self.step,
            recipient=self.recipient,
            channel=self.channel,
        )

    def record(self) -> dict[str, Any]:
        """The fields it is created with (the enqueueing script adds seq, status, tries)."""
        fields: dict[str, Any] = {
            "elder_id": self.elder_id,
            "incident_id": "" if self.incident_id is None else self.incident_id,
            "scope": self.scope,
            "step": self.step,
            "recipient": self.recipient,
            "phone": self.phone,
            "channel": self.channel,
            "extra": "1" if self.extra else "",
            "template": self.template,
            "text": self.text,
            "data": self.data,
            "locale": self.locale,
        }
        if self.fallback_of:
            fields["fallback_of"] = self.fallback_of
        return fields

    def on(self, channel: str) -> Attempt:
        """The same message on another channel: the fallback of this attempt."""
        return replace(
            self,
            channel=channel,
            extra=False,
            fallback_of=self.id,
            status="",
            tries=0,
            error="",
            provider_id="",
            created="",
            sent_at="",
        )


def parse_attempt(doc: Mapping[str, str]) -> Attempt | None:
    """The typed attempt of a stored hash; None if there is none."""
    if not doc:
        return None
    incident = doc.get("incident_id")
    return Attempt(
        elder_id=int(doc.get("elder_id") or 0),
        scope=doc.get("scope", ""),
        step=doc.get("step", ""),
        recipient=doc.get("recipient", ""),
        channel=doc.get("channel", ""),
        template=doc.get("template", ""),
        text=doc.get("text", ""),
        locale=doc.get("locale") or "zh-CN",
        phone=doc.get("phone", ""),
        incident_id=int(incident) if incident else None,
        data=doc.get("data") or "{}",
        extra=bool(doc.get("extra")),
        fallback_of=doc.get("fallback_of", ""),
        status=doc.get("status", ""),
        tries=int(doc.get("tries") or 0),
        error=doc.get("error", ""),
        provider_id=doc.get("provider_id", ""),
        created=doc.get("created", ""),
        sent_at=doc.get("sent_at", ""),
    )


def read_attempt(client: redis.Redis, attempt: str) -> Attempt | None:
    """The attempt as stored now; None if there is none."""
    doc: dict[str, str] = client.hgetall(keys.attempt(attempt))  # type: ignore[assignment]
    return parse_attempt(doc)
