"""Bodies and answers of /api/v1/devices."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from locator.core.schemas import Strict

# Device ids become MQTT topic levels, so no '/', '+', '#' or spaces.
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# native: our JSON over MQTT; owntracks: the app; the rest reach us through `homeward gateway`
# (TCP), which publishes them as native uplinks under the id the bracelet itself sends.
Protocol = Literal["native", "owntracks", "gt06", "jt808", "watch", "h02"]
# The id a TCP tracker sends about itself: a registration under any other id never matches.
GATEWAY_IDS = {
    "gt06": (r"\d{15}", "the bracelet's 15-digit IMEI"),
    "jt808": (r"\d{12}", "the terminal's 12-digit phone number"),
    "watch": (r"[0-9A-Za-z]{1,32}", "the id between the first * of its frames (letters, digits)"),
    "h02": (r"[0-9A-Za-z]{1,20}", "the id after *HQ, (letters, digits)"),
}


class DeviceCreate(Strict):
    device_id: DeviceId
    elder_id: int = Field(gt=0)
    protocol: Protocol = "native"
    external_id: Annotated[str | None, Field(max_length=128, validate_default=True)] = None
    offline_after_s: Annotated[int | None, Field(gt=0, le=7 * 86400)] = None
    report_interval_s: Annotated[
        int | None, Field(ge=5, le=3600, description="base reporting interval (default 60 s)")
    ] = None
    claim_code: Annotated[
        str | None,
        Field(max_length=32, description="the code on the bracelet's box (guardians need it)"),
    ] = None

    @field_validator("protocol")
    @classmethod
    def _gateway_device_id(cls, protocol: str, info: ValidationInfo) -> str:
        device_id = info.data.get("device_id")
        rule = GATEWAY_IDS.get(protocol)
        if rule and isinstance(device_id, str) and not re.fullmatch(rule[0], device_id):
            raise ValueError(f"a {protocol} device_id must be {rule[1]}")
        return protocol

    @field_validator("external_id")
    @classmethod
    def _owntracks_needs_topic_id(cls, ext: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("protocol") == "owntracks":
            parts = (ext or "").split("/")
            if len(parts) != 2 or not all(parts) or any(c in (ext or "") for c in "+# "):
                raise ValueError(
                    "an owntracks device needs external_id 'user/device' "
                    "(its topic owntracks/user/device)"
                )
        return ext


class GatewayRead(BaseModel):
    """A TCP bracelet's connection as the gateway recorded it (times ISO-8601 UTC)."""

    connected: bool = Field(description="a gateway holds its connection now")
    connected_at: str | None = Field(None, description="when it last connected")
    disconnected_at: str | None = Field(None, description="when its last connection closed")
    last_command: str | None = Field(None, description="the last command sent to it")
    last_command_at: str | None = None
    last_answer: str | None = Field(None, description="its last answer to a command")
    last_answer_at: str | None = None


class DeviceRead(BaseModel):
    device_id: str
    elder_id: int
    protocol: Protocol
    external_id: str | None
    offline_after_s: int | None
    report_interval_s: int | None = None
    created_at: str
    last_seen: str | None = None
    battery: int | None = None
    online: bool = False
    gateway: GatewayRead | None = Field(
        None, description="gt06, jt808, watch, h02: its TCP connection through the gateway"
    )


class OwnTracksSetup(BaseModel):
    """The OwnTracks app's settings for one phone: scan ``qr`` or open ``url`` on the phone."""

    config: dict[str, Any]
    url: str
    qr: str  # an SVG QR code of ``url``, as a data URI
