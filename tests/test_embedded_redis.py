"""The embedded Redis runs with glibc malloc tunables (its build uses glibc's malloc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from locator.embedded import MALLOC_TUNABLES, EmbeddedRedis


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _started_environment(tmp_path: Path) -> dict[str, str]:
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        assert server.process is not None
        return _environment(server.process.pid)
    finally:
        server.stop()


def test_the_embedded_redis_gets_the_malloc_tunables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert _started_environment(tmp_path)["GLIBC_TUNABLES"] == MALLOC_TUNABLES


def test_an_operators_own_tunables_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7")
    assert _started_environment(tmp_path)["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=7"
