"""How long a session opened by an SMS link may last: while the alert still needs that
volunteer. The shell owns this check because ``locator.core`` cannot read incidents."""

from __future__ import annotations

import anyio

from alerts import escalation
from alerts.incidents import storage
from locator.core.auth import Principal
from locator.core.deps import AppContext


async def still_responding(ctx: AppContext, incident_id: int, principal: Principal) -> bool:
    """True while the incident is open and this volunteer was sent it and not stood down."""
    volunteer_id = principal.volunteer_id()
    client = ctx.sync_redis
    if volunteer_id is None or client is None:
        return False

    def check() -> bool:
        snap = storage.read_incident(client, incident_id=incident_id)
        if snap is None:
            return False
        responder = snap.responders.get(volunteer_id)
        return (
            snap.status in escalation.ACTIVE
            and responder is not None
            and responder.get("state") != escalation.STOOD_DOWN
        )

    return await anyio.to_thread.run_sync(check)
