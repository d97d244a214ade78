"""Bodies and answers of /api/v1/devices."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from locator.core.schemas import Strict

# Device ids become MQTT topic levels, so no '/', '+', '#' or spaces.
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Protocol = Literal["native", "owntracks"]


class DeviceCreate(Strict):
    device_id: DeviceId
    elder_id: int = Field(gt=0)
    protocol: Protocol = "native"
    external_id: Annotated[str | None, Field(max_length=128)] = None
    offline_after_s: Annotated[int | None, Field(gt=0, le=7 * 86400)] = None

    @model_validator(mode="after")
    def _owntracks_needs_topic_id(self) -> DeviceCreate:
        if self.protocol == "owntracks":
            ext = self.external_id or ""
            parts = ext.split("/")
            if len(parts) != 2 or not all(parts) or any(c in ext for c in "+# "):
                raise ValueError(
                    "external_id: an owntracks device needs external_id 'user/device' "
                    "(its topic owntracks/user/device)"
                )
        return self


class DeviceRead(BaseModel):
    device_id: str
    elder_id: int
    protocol: Protocol
    external_id: str | None
    offline_after_s: int | None
    created_at: str
    last_seen: str | None = None
    battery: int | None = None
    online: bool = False
