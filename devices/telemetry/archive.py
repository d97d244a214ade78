"""The cold tracks: fixes older than the hot window, in PostgreSQL (``HOMEWARD_ARCHIVE_URL``).

One table partitioned by fix day (UTC), ``PARTITION BY RANGE (tst)``; its primary key
(elder, fix time, device, stream entry id) is both the natural key the mover's
``ON CONFLICT DO NOTHING`` needs (a copy repeated after a crash adds nothing) and the index
her time-window reads and her erasure use. Retention drops whole days.

A copy and her erasure take the same advisory lock on her id, and a copy commits only if
her track is still in Redis, so a copy racing her erasure cannot leave a fix behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

import psycopg
from fastapi import Depends
from psycopg import sql

from devices.telemetry.schemas import Fix
from locator.core.deps import AppContext, get_context
from locator.core.settings import Settings

TABLE = "hw_track_fixes"  # written out in the statements below
# Advisory locks are (namespace, key) pairs: this namespace is the archive's, the key her id.
LOCK_NS = 0x4877  # "Hw"
DAYS_AHEAD = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hw_track_fixes (
  elder_id bigint NOT NULL,
  tst timestamptz NOT NULL,
  device_id text NOT NULL,
  entry_id text NOT NULL,
  received_at timestamptz NOT NULL,
  lat double precision NOT NULL,
  lon double precision NOT NULL,
  acc real,
  vel real,
  cog real,
  batt smallint,
  src text,
  alarm text,
  flags text,
  PRIMARY KEY (elder_id, tst, device_id, entry_id)
) PARTITION BY RANGE (tst)
"""

_INSERT = """
INSERT INTO hw_track_fixes (elder_id, tst, device_id, entry_id, received_at, lat, lon, acc,
  vel, cog, batt, src, alarm, flags)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

_READ = """
SELECT device_id, entry_id, extract(epoch FROM tst)::float8,
  extract(epoch FROM received_at)::float8 * 1000, lat, lon, acc, vel, cog, batt, src, alarm,
  flags
FROM hw_track_fixes WHERE elder_id = %s AND tst BETWEEN %s AND %s ORDER BY tst DESC LIMIT %s
"""


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def partition_name(day: date) -> str:
    """The partition holding one UTC day of fix times."""
    return f"{TABLE}_{day:%Y%m%d}"


class TrackArchive:
    """The PostgreSQL side of the tracks; one short connection per operation."""

    def __init__(self, url: str, *, hot_s: int) -> None:
        self.url = url
        self.hot_s = hot_s
        self._days: set[date] = set()  # partitions known to exist (created or seen)
        self._schema_ready = False

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, connect_timeout=5)

    def prepare(self, *, now: float) -> None:
        """The table, and partitions for today and the next days (created ahead)."""
        today = _at(now).date()
        self._ensure([today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)])

    def _ensure(self, days: Iterable[date]) -> None:
        missing = sorted(set(days) - self._days)
        if self._schema_ready and not missing:
            return
        with self._connect() as conn:
            conn.execute(_SCHEMA)
            for day in missing:
                # DDL takes no parameters: the bounds are literals quoted by psycopg.
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(partition_name(day)),
                        sql.Identifier(TABLE),
                        sql.Literal(f"{day.isoformat()} 00:00:00+00"),
                        sql.Literal(f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"),
                    )
                )
        self._schema_ready = True
        self._days.update(missing)

    def store(self, *, elder_id: int, fixes: list[Fix], still_held: Callable[[], bool]) -> bool:
        """Copy her fixes (idempotent); commits only if ``still_held()`` says she is not
        being erased. False when it rolled back."""
        self._ensure(_at(f.tst).date() for f in fixes)
        with self._connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NS, elder_id))
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [_row(elder_id, f) for f in fixes])
            if not still_held():
                conn.rollback()
                return False
        return True

    def erase_elder(self, *, elder_id: int) -> int:
        """Delete every archived fix of hers; how many went."""
        self._ensure(())
        with self._connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NS, elder_id))
            gone = conn.execute("DELETE FROM hw_track_fixes WHERE elder_id = %s", (elder_id,))
            return gone.rowcount

    def read(self, *, elder_id: int, since: float, until: float, limit: int) -> list[Fix]:
        """Her archived fixes with fix time in [since, until], the newest ``limit``."""
        self._ensure(())
        with self._connect() as conn:
            rows = conn.execute(_READ, (elder_id, _at(since), _at(until), limit)).fetchall()
        return [_fix(row) for row in rows]

    def drop_before(self, *, cutoff: float) -> int:
        """Retention: drop each day whose first moment is before ``cutoff``; how many went.

        Whole days only (a row DELETE would scan a day of the province's fixes), and a day
        goes as soon as any of it is past the limit: nothing is ever kept longer than
        retention, at the price of up to a day less.
        """
        self._ensure(())
        limit = _at(cutoff)
        dropped = 0
        with self._connect() as conn:
            for day in self.days(conn):
                if datetime.combine(day, datetime.min.time(), UTC) < limit:
                    conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier(partition_name(day))
                        )
                    )
                    self._days.discard(day)
                    dropped += 1
        return dropped

    def days(self, conn: psycopg.Connection[Any] | None = None) -> list[date]:
        """The days that have a partition, oldest first."""
        query = (
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s"
        )
        if conn is None:
            with self._connect() as own:
                names = [r[0] for r in own.execute(query, (TABLE,)).fetchall()]
        else:
            names = [r[0] for r in conn.execute(query, (TABLE,)).fetchall()]
        prefix = f"{TABLE}_"
        return sorted(datetime.strptime(n[len(prefix) :], "%Y%m%d").date() for n in names)

    def size(self) -> dict[str, int]:
        """Rows and bytes over every partition: ``heap`` (the rows' pages), ``index`` (the
        primary key), ``total`` (with TOAST and the free-space and visibility maps)."""
        totals = {"rows": 0, "heap": 0, "index": 0, "total": 0}
        with self._connect() as conn:
            for day in self.days(conn):
                name = partition_name(day)
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), pg_relation_size({0}), pg_indexes_size({0}),"
                        " pg_total_relation_size({0}) FROM {1}"
                    ).format(sql.Literal(name), sql.Identifier(name))
                ).fetchone()
                for field, value in zip(totals, row or (), strict=True):
                    totals[field] += int(value)
        return totals


def _row(elder_id: int, f: Fix) -> tuple[Any, ...]:
    return (
        elder_id,
        _at(f.tst),
        f.device_id,
        f.entry_id,
        _at(f.received_ms / 1000),
        f.lat,
        f.lon,
        f.acc,
        f.vel,
        f.cog,
        f.batt,
        f.src,
        f.alarm,
        ",".join(f.flags) or None,
    )


def _fix(row: tuple[Any, ...]) -> Fix:
    device_id, entry_id, tst, received_ms, lat, lon, acc, vel, cog, batt, src, alarm, flags = row
    return Fix(
        device_id=device_id,
        entry_id=entry_id,
        tst=float(tst),
        received_ms=float(received_ms),
        lat=float(lat),
        lon=float(lon),
        acc=acc,
        src=src,
        vel=vel,
        cog=cog,
        batt=batt,
        alarm=alarm,
        flags=tuple(f for f in (flags or "").split(",") if f),
    )


@lru_cache(maxsize=4)
def _archive(url: str, hot_s: int) -> TrackArchive:
    return TrackArchive(url, hot_s=hot_s)


def for_settings(settings: Settings | None) -> TrackArchive | None:
    """The process's archive for these settings; None when no ARCHIVE_URL is set."""
    if settings is None or not settings.archive_url:
        return None
    return _archive(settings.archive_url, settings.track_hot_s)


async def get_archive(ctx: Annotated[AppContext, Depends(get_context)]) -> TrackArchive | None:
    return for_settings(ctx.settings)


ArchiveDep = Annotated[TrackArchive | None, Depends(get_archive)]
