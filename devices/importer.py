"""Bulk registration of elders and their devices from a CSV file, with a per-row report."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from devices import keys
from devices.elders import service as elders
from devices.elders.schemas import ElderCreate
from devices.registry import service as registry
from devices.registry import stock
from devices.registry.schemas import DeviceCreate
from locator.core import store
from locator.core.auth import Principal
from locator.core.clock import Clock
from locator.core.errors import Forbidden, HomewardError, Unprocessable

COLUMNS = (
    "name",
    "home_lat",
    "home_lon",
    "address",
    "description",
    "medical_notes",
    "photo_url",
    "guardian_name",
    "guardian_phone",
    "guardian_relation",
    "guardian2_name",
    "guardian2_phone",
    "guardian2_relation",
    "device_id",
    "protocol",
    "external_id",
    "claim_code",
    "owner",
    "crs",
)
REQUIRED = ("name", "home_lat", "home_lon", "guardian_name", "guardian_phone")
MAX_ROWS = 20_000


class RowError(BaseModel):
    column: str
    message: str


class RowResult(BaseModel):
    row: int
    status: Literal["created", "error"]
    elder_id: int | None = None
    device_id: str | None = None
    errors: list[RowError] = []


class ImportReport(BaseModel):
    created: int
    failed: int
    rows: list[RowResult]


def _column_of(loc: tuple[int | str, ...]) -> str:
    """Map a model field path back to the CSV column the user wrote."""
    head = loc[0] if loc else "row"
    if head == "home" and len(loc) > 1:
        return f"home_{loc[1]}"
    if head == "guardians" and len(loc) > 2:
        prefix = "guardian" if loc[1] == 0 else f"guardian{int(loc[1]) + 1}"
        return f"{prefix}_{loc[2]}"
    if head == "guardians":
        return "guardian_name"
    return str(head)


def _errors(exc: ValidationError) -> list[RowError]:
    out = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        column = _column_of(tuple(err["loc"]))
        if column == "row" and message.startswith("external_id:"):
            column, message = "external_id", message.removeprefix("external_id:").strip()
        out.append(RowError(column=column, message=message))
    return out


def _elder_body(row: dict[str, str]) -> dict[str, Any]:
    guardians = []
    for prefix in ("guardian", "guardian2"):
        if row.get(f"{prefix}_name") or row.get(f"{prefix}_phone"):
            guardians.append(
                {
                    "name": row.get(f"{prefix}_name", ""),
                    "phone": row.get(f"{prefix}_phone", ""),
                    "relation": row.get(f"{prefix}_relation", ""),
                }
            )
    body: dict[str, Any] = {
        "name": row.get("name", ""),
        "home": {"lat": row.get("home_lat", ""), "lon": row.get("home_lon", "")},
        "guardians": guardians,
    }
    for optional in ("address", "description", "medical_notes", "photo_url", "owner", "crs"):
        if row.get(optional):
            body[optional] = row[optional]
    return body


async def import_csv(
    redis: aioredis.Redis, *, caller: Principal, text: str, clock: Clock
) -> ImportReport:
    """Register every valid row (elder, then its device); report each row's fate."""
    if not caller.is_staff:
        raise Forbidden("only staff may bulk-import elders")
    # newline="": the csv module reads line ends itself (a lone CR inside a field is data).
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = list(reader)  # the body is capped (MAX_BODY_BYTES), so this is bounded
    except csv.Error as exc:
        raise Unprocessable(["csv"], f"not a readable CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        errors = [RowError(column=c, message="required column is missing") for c in missing]
        errors += [RowError(column=c, message="unknown column") for c in unknown]
        return ImportReport(
            created=0, failed=1, rows=[RowResult(row=1, status="error", errors=errors)]
        )
    results: list[RowResult] = []
    seen_devices: dict[str, int] = {}
    for number, raw in enumerate(rows, start=2):
        if number - 1 > MAX_ROWS:
            results.append(
                RowResult(
                    row=number,
                    status="error",
                    errors=[
                        RowError(column="row", message=f"more than {MAX_ROWS} rows; split the file")
                    ],
                )
            )
            break
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        results.append(
            await _import_row(
                redis, caller=caller, row=row, number=number, seen=seen_devices, clock=clock
            )
        )
    created = sum(1 for r in results if r.status == "created")
    return ImportReport(created=created, failed=len(results) - created, rows=results)


async def _import_row(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    row: dict[str, str],
    number: int,
    seen: dict[str, int],
    clock: Clock,
) -> RowResult:
    errors: list[RowError] = []
    elder_body: ElderCreate | None = None
    device_fields: dict[str, Any] | None = None
    try:
        elder_body = ElderCreate.model_validate(_elder_body(row))
    except ValidationError as exc:
        errors += _errors(exc)
    if row.get("device_id"):
        device_fields = {
            "device_id": row["device_id"],
            "protocol": row.get("protocol") or "native",
            "external_id": row.get("external_id") or None,
        }
        try:
            DeviceCreate.model_validate({**device_fields, "elder_id": 1})
        except ValidationError as exc:
            errors += _errors(exc)
        device_id = row["device_id"]
        if device_id in seen:
            errors.append(RowError(column="device_id", message=f"also on row {seen[device_id]}"))
        elif await redis.exists(keys.device(device_id)):
            errors.append(RowError(column="device_id", message="is already registered"))
        seen.setdefault(device_id, number)
        ext = device_fields["external_id"]
        if ext and await redis.exists(keys.device_external(device_fields["protocol"], ext)):
            errors.append(RowError(column="external_id", message="is already registered"))
        errors += await _claim_code_errors(redis, row)
    elif row.get("claim_code"):
        errors.append(RowError(column="claim_code", message="a claim code needs a device_id"))
    if errors or elder_body is None:
        return RowResult(row=number, status="error", errors=errors)
    elder = await elders.create(redis, caller=caller, body=elder_body, clock=clock)
    if device_fields is None:
        return RowResult(row=number, status="created", elder_id=elder.id)
    code = stock.normalize(row.get("claim_code", ""))
    stocked = False
    try:
        device = DeviceCreate.model_validate({**device_fields, "elder_id": elder.id})
        if code:
            await stock.put(
                redis, device_id=device.device_id, protocol=device.protocol, code=code, clock=clock
            )
            stocked = True
        await registry.register(redis, caller=caller, body=device, clock=clock)
    except HomewardError as exc:
        if stocked:
            await stock.discard(redis, device_id=device.device_id)
        # Keep the file's rows all-or-nothing: an elder without the device it was listed with
        # would look registered but never be located.
        await elders.mark_deleted(redis, caller=caller, elder_id=elder.id, clock=clock)
        return RowResult(
            row=number,
            status="error",
            errors=[RowError(column="device_id", message=str(exc.detail))],
        )
    return RowResult(row=number, status="created", elder_id=elder.id, device_id=device.device_id)


async def _claim_code_errors(redis: aioredis.Redis, row: dict[str, str]) -> list[RowError]:
    """A ``claim_code`` stocks the row's bracelet with the code printed on its box."""
    if not row.get("claim_code"):
        return []
    if stock.normalize(row["claim_code"]) is None:
        message = (
            f"must be at least {stock.MIN_CODE_LENGTH} characters of "
            f"{stock.ALPHABET} (dashes and spaces ignored)"
        )
        return [RowError(column="claim_code", message=message)]
    if await redis.exists(keys.device_stock(row["device_id"])):
        return [RowError(column="claim_code", message="the bracelet is already in stock")]
    return []


async def bulk_register(
    redis: aioredis.Redis, *, rows: Iterable[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Elders and their devices stored unchecked in the registry's layout (the benches' fleets)."""
    batch: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 1000:
            await _store_rows(redis, batch)
            batch = []
    if batch:
        await _store_rows(redis, batch)
    await redis.incr(keys.DEVICES_VERSION)


async def _store_rows(
    redis: aioredis.Redis, rows: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for elder, device in rows:
            elder_id, name = int(elder["id"]), str(device["device_id"])
            pipe.set(keys.elder(elder_id), store.dump(elder))
            pipe.zadd(keys.ELDERS, {str(elder_id): elder_id})
            pipe.set(keys.device(name), store.dump(device))
            pipe.set(keys.elder_device(elder_id), name)
            pipe.zadd(keys.DEVICES, {name: 0})
            pipe.sadd(keys.elder_track_devices(elder_id), name)
        await pipe.execute()
