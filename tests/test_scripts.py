"""One way to load Lua (locator/core/scripts.py): EVALSHA, and a forgotten script loaded again.

Runs on its own Redis (started here): the tests flush its script cache, which must not
touch the session's server other tests share.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from locator.core.scripts import ItemScript, Script
from tests.servers import redis_server

ROOT = Path(__file__).resolve().parent.parent
ECHO = Script("return {KEYS[1], ARGV[1]}", name="echo")
EACH = ItemScript(
    """
if ARGV[1] == 'fail' then return redis.call('HSET', KEYS[1], 'f', 'v') end
if ARGV[1] == 'nil' then return nil end
return {KEYS[1], KEYS[#KEYS], unpack(ARGV)}
""",
    name="each",
)


@pytest.fixture(scope="module")
def own_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("HOMEWARD_TEST_REDIS_URL"):
        pytest.skip("flushes the script cache: only on a server these tests start")
    with redis_server(tmp_path_factory.mktemp("scripts-redis")) as url:
        yield url


@pytest.fixture
def client(own_redis_url: str) -> Iterator[redis.Redis]:
    sync = redis.Redis.from_url(own_redis_url, decode_responses=True)
    sync.script_flush()  # every test starts from a server that knows no script
    yield sync
    sync.close()


def test_the_sha_is_the_servers_own() -> None:
    commit = Script.from_package("alerts.incidents", "commit.lua")
    text = (ROOT / "alerts/incidents/commit.lua").read_text(encoding="utf-8")
    assert commit.script == text
    assert commit.sha == hashlib.sha1(text.encode()).hexdigest()


def test_a_forgotten_script_is_loaded_once_and_the_call_repeated(client: redis.Redis) -> None:
    assert client.script_exists(ECHO.sha) == [False]
    assert ECHO(client, keys=["hw:k"], args=["v"]) == ["hw:k", "v"]
    assert client.script_exists(ECHO.sha) == [True]
    # A restarted server forgets it again: the next call still answers.
    client.script_flush()
    assert ECHO(client, keys=["hw:k2"], args=[7]) == ["hw:k2", "7"]


def test_a_pipeline_loads_its_scripts_before_it_runs(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    ECHO(pipe, keys=["hw:a"], args=["1"])
    pipe.get("hw:none")
    ECHO(pipe, keys=["hw:b"], args=["2"])
    assert pipe.execute() == [["hw:a", "1"], None, ["hw:b", "2"]]


def test_queue_skips_the_check_and_leaves_noscript_to_the_caller(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    ECHO.queue(pipe, keys=["hw:a"], args=["1"])
    (reply,) = pipe.execute(raise_on_error=False)
    assert isinstance(reply, NoScriptError)
    ECHO.ensure_loaded(client)
    pipe = client.pipeline(transaction=False)
    ECHO.queue(pipe, keys=["hw:a"], args=["1"])
    assert pipe.execute() == [["hw:a", "1"]]


async def test_async_clients_and_pipelines(own_redis_url: str, client: redis.Redis) -> None:
    aclient = aioredis.Redis.from_url(own_redis_url, decode_responses=True)
    try:
        assert await ECHO.run_async(aclient, keys=["hw:x"], args=["y"]) == ["hw:x", "y"]
        client.script_flush()
        async with aclient.pipeline(transaction=False) as pipe:
            await ECHO.run_async(pipe, keys=["hw:p"], args=["q"])
            assert await pipe.execute() == [["hw:p", "q"]]
    finally:
        await aclient.aclose()


def test_one_call_runs_every_item_and_an_items_error_is_its_own(client: redis.Redis) -> None:
    client.set("hw:str", "x")
    items = [
        (["hw:a"], ["1"]),
        (["hw:str"], ["fail"]),  # WRONGTYPE in the middle: the items after it still run
        (["hw:b", "hw:c"], ["2", "3"]),
        (["hw:n"], ["nil"]),
        (["hw:d"], ["4"]),
    ]
    EACH.ensure_loaded(client)
    pipe = client.pipeline(transaction=False)
    EACH.queue_items(pipe, items)
    (replies,) = pipe.execute(raise_on_error=False)
    assert replies[0] == ["hw:a", "hw:a", "1"]
    assert isinstance(replies[1], redis.ResponseError)
    assert str(replies[1]).startswith("WRONGTYPE")  # Redis' own code, not "@user_script: ..."
    assert replies[2:] == [["hw:b", "hw:c", "2", "3"], None, ["hw:d", "hw:d", "4"]]
    # Items alike (the store's uplinks) share one count in the header.
    uniform = [(["hw:x"], ["a", "b"]), (["hw:y"], ["c", "d"])]
    assert EACH.pack(uniform) == (["hw:x", "hw:y"], [2, 1, 2, "a", "b", "c", "d"])
    client.script_flush()  # a restarted server: loaded again
    assert EACH.run_grouped(client, uniform) == [
        ["hw:x", "hw:x", "a", "b"],
        ["hw:y", "hw:y", "c", "d"],
    ]
    with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE"):
        EACH.run_grouped(client, items, per_call=2)


def test_a_write_refused_in_an_item_keeps_the_outage_code(client: redis.Redis) -> None:
    # Redis words a refused write inside a script "@user_script: 2: -OOM ...": the item's
    # error is the one a plain command gets (OutOfMemoryError), so a caller can tell an
    # outage from a bad message.
    before = client.config_get("maxmemory")["maxmemory"]
    EACH.ensure_loaded(client)
    client.config_set("maxmemory", 1)
    try:
        pipe = client.pipeline(transaction=False)
        EACH.queue_items(pipe, [(["hw:a"], ["fail"]), (["hw:b"], ["2"])])
        (replies,) = pipe.execute(raise_on_error=False)
    finally:
        client.config_set("maxmemory", before)
    assert isinstance(replies[0], redis.exceptions.OutOfMemoryError)
    assert replies[1] == ["hw:b", "hw:b", "2"]


def test_every_script_goes_through_the_helper() -> None:
    raw = re.compile(r"\.eval\(|register_script\(|\.evalsha\(|script_load\(")
    offenders = []
    for package in ("locator", "devices", "geofences", "alerts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == "locator/core/scripts.py":
                continue
            if raw.search(path.read_text(encoding="utf-8")):
                offenders.append(name)
    assert offenders == []


def test_the_store_script_is_assembled_from_its_owners_pieces() -> None:
    # Devices' text keeps a slot per geofences piece; the zone stage fills every one.
    from devices.ingest.pipeline import assemble
    from geofences.evaluator import lua_pieces

    pieces = lua_pieces()
    assert set(pieces) == {"check", "apply"}
    text = assemble(pieces).script
    assert not re.search(r"^-- @zones ", text, flags=re.M)
    assert "return refuse('zone_conflict')" in text and "KEYS[9]" in text
    # Without the zone stage the slots stay comments: nothing touches geofences' keys.
    bare = assemble({}).script
    assert "KEYS[8]" not in bare and "KEYS[9]" not in bare
    with pytest.raises(ValueError, match="no '-- @zones nope' slot"):
        assemble({"nope": "return 1"})
