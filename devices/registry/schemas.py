"""Bodies and answers of /api/v1/devices."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from locator.core.schemas import Strict

# Device ids become MQTT topic levels, so no '/', '+', '#' or spaces.
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# native: our JSON over MQTT; owntracks: the app; the rest reach us through `homeward gateway`
# (TCP), which publishes them as native uplinks under the id the bracelet itself sends.
Protocol = Literal["native", "owntracks", "gt06", "jt808", "watch", "h02"]


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


class OwnTracksSetup(BaseModel):
    """The OwnTracks app's settings for one phone: scan ``qr`` or open ``url`` on the phone."""

    config: dict[str, Any]
    url: str
    qr: str  # an SVG QR code of ``url``, as a data URI
