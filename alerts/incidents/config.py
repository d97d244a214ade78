"""The alerts stage's configuration: clock, language, configured channels, the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from alerts.escalation import Policy
from alerts.notify.channels import configured
from locator.core.clock import Clock
from locator.core.settings import Settings


@dataclass(frozen=True)
class AlertsConfig:
    """What the alerts stage needs besides Redis: time, language and configured channels."""

    clock: Clock
    timezone: ZoneInfo
    locale: str
    channels: frozenset[str]
    policy: Policy = field(default_factory=Policy)
    public_url: str | None = None  # links in messages
    settings: Settings | None = None  # provider credentials, for the channels' construction
    drill_notify_family: bool = False  # HOMEWARD_DRILL_NOTIFY_FAMILY (alerts/incidents/drills.py)


def config_from(settings: Settings, *, clock: Clock, mqtt_url: str | None) -> AlertsConfig:
    """The alerts stage's configuration for a process, from its settings."""
    return AlertsConfig(
        clock=clock,
        timezone=settings.zone,
        locale=settings.locale,
        channels=configured(
            mqtt_url=mqtt_url,
            twilio=bool(
                settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
            ),
            webpush=bool(settings.vapid_private_key),
        ),
        public_url=settings.public_url,
        settings=settings,
        drill_notify_family=settings.drill_notify_family,
        policy=Policy(
            respond_s=settings.respond_sla_s,
            onsite_s=settings.onsite_sla_s,
            voice_after_s=settings.voice_after_s,
        ),
    )
