"""Shell routes: tokens, elder deletion (spans domains) and the CSV import."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from pydantic import BaseModel, Field

from devices import importer
from locator import flows
from locator.core.auth import Principal, Role, create_token, revoke_token
from locator.core.deps import CallerDep, ClockDep, RedisDep
from locator.core.errors import Forbidden, NotFound, Unprocessable
from locator.core.schemas import Strict

router = APIRouter()


class TokenCreate(Strict):
    role: Role
    subject: Annotated[str | None, Field(max_length=64, pattern=r"^[A-Za-z0-9_.:+-]+$")] = None


class TokenRead(BaseModel):
    token: str
    role: Role
    subject: str | None


def _may_mint(caller: Principal, role: Role) -> bool:
    if caller.role is Role.ADMIN:
        return True
    # Dispatchers onboard families and volunteers, never other staff.
    return caller.role is Role.DISPATCHER and role in (Role.GUARDIAN, Role.VOLUNTEER)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
async def mint_token(
    body: TokenCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> TokenRead:
    """Create a bearer token (shown once; only its hash is stored)."""
    if not _may_mint(caller, body.role):
        raise Forbidden(f"role {caller.role} may not create {body.role} tokens")
    token, subject = await create_token(
        redis, role=body.role, subject=body.subject, created_at=clock.time()
    )
    return TokenRead(token=token, role=body.role, subject=subject)


class TokenRevoke(Strict):
    token: Annotated[str, Field(min_length=8, max_length=200)]


@router.post("/tokens/revoke", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
async def revoke(body: TokenRevoke, redis: RedisDep, caller: CallerDep) -> Response:
    """Revoke a token (admin), e.g. a lost phone's; 404 if it was not a live token."""
    caller.require(Role.ADMIN)
    if not await revoke_token(redis, body.token):
        raise NotFound("no such token")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/elders/{elder_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["elders"])
async def delete_elder(
    elder_id: int, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> Response:
    """Remove an elder with their device binding, zones and pair; incidents stay."""
    await flows.delete_elder(redis, caller=caller, elder_id=elder_id, clock=clock)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/import/elders", tags=["elders"])
async def import_elders(
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    csv_text: Annotated[str, Body(media_type="text/csv", description="CSV with a header row")],
) -> importer.ImportReport:
    """Bulk-register elders and devices from CSV (admin); the answer reports every row."""
    if not csv_text.strip():
        raise Unprocessable(["csv"], "the CSV body is empty")
    return await importer.import_csv(redis, caller=caller, text=csv_text, clock=clock)
