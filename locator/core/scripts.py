"""The one way to run Lua: ``Script`` objects, from a package's ``.lua`` file or a string.

A script runs by EVALSHA. A server that does not know it (restarted, failed over, a new
cluster node) answers NOSCRIPT: the script is loaded once and the call repeated. Queued in
a pipeline, the script is registered with it, so redis-py checks SCRIPT EXISTS and loads it
before the pipeline runs. On redis-py's cluster clients EVALSHA goes to the slot of its
first key (every key of one call must share a hash tag) and SCRIPT LOAD to every primary;
a cluster pipeline cannot load scripts, so ``ensure_loaded`` runs first there.

``ItemScript`` runs one body once per item of a call: a batch of per-elder calls in one
EVALSHA (on a cluster, one per hash slot), each item with its own KEYS and ARGV.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

SyncClient = redis.Redis | RedisCluster | Pipeline | ClusterPipeline
AsyncClient = aioredis.Redis | AsyncRedisCluster | AsyncPipeline | AsyncClusterPipeline
Value = str | bytes | int | float


class Script:
    """One Lua script: its text and SHA1, run on sync or async clients, plain or cluster."""

    def __init__(self, source: str, *, name: str = "inline") -> None:
        # ``script`` and ``sha`` are the attributes redis-py's pipelines read and update
        # when they load the scripts registered with them (``Pipeline.load_scripts``).
        self.script = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.name = name

    @classmethod
    def from_package(cls, package: str, filename: str) -> Script:
        """A script kept as a ``.lua`` file inside a package (shipped with the wheel)."""
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        return cls(text, name=filename)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:8]})"

    def __call__(
        self, client: SyncClient, *, keys: Sequence[str] = (), args: Sequence[Value] = ()
    ) -> Any:
        """Run it now (a client) or queue it (a pipeline: the reply comes from ``execute``)."""
        if isinstance(client, ClusterPipeline):
            return client.evalsha(self.sha, len(keys), *keys, *args)
        if isinstance(client, Pipeline):
            client.scripts.add(self)  # type: ignore[arg-type]  # duck-typed: script, sha
            return client.evalsha(self.sha, len(keys), *keys, *args)
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.script)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def run_many(
        self, client: SyncClient, calls: Sequence[tuple[Sequence[str], Sequence[Value]]]
    ) -> list[Any]:
        """Many calls (each its own keys) in one pipeline: one round trip per node; replies.

        Loaded only when a server does not know it (a restart, a new cluster node): the calls
        it refused did not run and are sent again (a cluster pipeline cannot load scripts).
        """
        if not calls:
            return []
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for index in todo:
                script_keys, args = calls[index]
                pipe.evalsha(self.sha, len(script_keys), *script_keys, *args)
            results = pipe.execute(raise_on_error=False)
            missing = []
            for index, result in zip(todo, results, strict=True):
                if isinstance(result, NoScriptError) and attempt == 0:
                    missing.append(index)
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[index] = result
            if not missing:
                break
            client.script_load(self.script)  # on a cluster: every primary
            todo = missing
        return replies

    async def run_async(
        self, client: AsyncClient, *, keys: Sequence[str] = (), args: Sequence[Value] = ()
    ) -> Any:
        """``__call__`` for the asyncio clients (a pipeline queues it, as there)."""
        if isinstance(client, AsyncClusterPipeline):
            # Queued synchronously: awaiting the pipeline here would drop the command.
            return client.evalsha(self.sha, len(keys), *keys, *args)
        if isinstance(client, AsyncPipeline):
            client.scripts.add(self)  # type: ignore[arg-type]  # duck-typed: script, sha
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(
        self, pipe: Pipeline | ClusterPipeline, *, keys: Sequence[str], args: Sequence[Value]
    ) -> None:
        """Queue EVALSHA only, for a hot pipeline that ``ensure_loaded`` once beforehand.

        Skips the SCRIPT EXISTS round trip a registered script costs every ``execute``; an
        entry answered with ``NoScriptError`` (Redis restarted) is the caller's to redo.
        """
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def ensure_loaded(self, client: redis.Redis | RedisCluster) -> None:
        """Load it now (on a cluster: on every primary), before pipelines that cannot."""
        client.script_load(self.script)


# The body becomes a local function: its parameters shadow the globals KEYS and ARGV, so it
# reads its own item's, and its ``return`` ends its item only. An error in one item (a
# refused write, a Lua error) becomes that item's error reply and the items after it still
# run, as separate calls in one pipeline would; a redis.call error keeps its own code
# ("OOM ...", not "@user_script: 12: -OOM ..."), so the caller can tell an outage from a bug.
_EACH_HEAD = "local function one(KEYS, ARGV)\n"
_EACH_TAIL = """
end
-- ARGV: n items, then every item's key and arg count ('' and '' when they differ: then a
-- pair per item follows), then every item's args in turn; KEYS: every item's keys in turn.
local n = tonumber(ARGV[1])
local same_k, same_a = tonumber(ARGV[2]), tonumber(ARGV[3])
local k, a = 0, same_k and 3 or 3 + 2 * n
local out = {}
for i = 1, n do
  local nk, na = same_k, same_a
  if not nk then nk, na = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i]) end
  -- Built by one constructor each: sized once (filled one by one, a table grows 5 times).
  local item_keys, item_args = {unpack(KEYS, k + 1, k + nk)}, {unpack(ARGV, a + 1, a + na)}
  k, a = k + nk, a + na
  local ok, reply = pcall(one, item_keys, item_args)
  if not ok then
    reply = {err = (string.gsub(tostring(reply), '^@user_script: %d+: %-', ''))}
  elseif reply == nil then
    reply = false  -- a nil would end the reply's array here and shift every later item
  end
  out[i] = reply
end
return out
"""


class ItemScript(Script):
    """A per-item body run once for each item of one call: many calls, one EVALSHA.

    What a call costs Redis beyond its commands (parsing, the script's KEYS and ARGV tables,
    its reply, a MULTI/EXEC around its writes in the AOF) and the client (a reply to parse,
    a NOSCRIPT check) is paid per batch, not per item. A call's reply is the items' replies
    in order; an item that failed is an error in its place. Every key of one call must be in
    one hash slot on a cluster: group items by slot (``slot_of``), one call per group.
    """

    def __init__(self, body: str, *, name: str = "inline") -> None:
        super().__init__(_EACH_HEAD + body.rstrip("\n") + _EACH_TAIL, name=name)
        self.body = body

    @staticmethod
    def pack(
        items: Sequence[tuple[Sequence[str], Sequence[Value]]],
    ) -> tuple[list[str], list[Value]]:
        """One call's KEYS and ARGV for ``items`` (each its keys and args), in their order."""
        counts = [(len(item_keys), len(item_args)) for item_keys, item_args in items]
        header: list[Value] = [len(items)]
        if len(set(counts)) == 1:
            header += counts[0]  # the usual case: one count for all, no pair per item
        else:
            header += ("", "")
            header += [x for pair in counts for x in pair]
        all_keys: list[str] = []
        all_args: list[Value] = []
        for item_keys, item_args in items:
            all_keys += item_keys
            all_args += item_args
        return all_keys, header + all_args

    def queue_items(
        self,
        pipe: Pipeline | ClusterPipeline,
        items: Sequence[tuple[Sequence[str], Sequence[Value]]],
    ) -> None:
        """Queue one EVALSHA for ``items`` (``queue``: loaded beforehand, NOSCRIPT is the
        caller's); its reply is a list with one reply per item."""
        all_keys, args = self.pack(items)
        self.queue(pipe, keys=all_keys, args=args)

    def run_grouped(
        self,
        client: redis.Redis | RedisCluster,
        items: Sequence[tuple[Sequence[str], Sequence[Value]]],
        *,
        per_call: int = 32,
    ) -> list[Any]:
        """Run ``items`` now: one call per hash slot (one call on a plain Redis), at most
        ``per_call`` items each, in one pipeline (``run_many``); a reply per item, in order.

        An item's error is raised, after every call ran.
        """
        cluster = isinstance(client, RedisCluster)
        groups: dict[int, list[int]] = {}
        for index, (item_keys, _) in enumerate(items):
            groups.setdefault(slot_of(item_keys[0]) if cluster else 0, []).append(index)
        chunks = [
            group[start : start + per_call]
            for group in groups.values()
            for start in range(0, len(group), per_call)
        ]
        calls = [self.pack([items[i] for i in chunk]) for chunk in chunks]
        replies: list[Any] = [None] * len(items)
        for chunk, reply in zip(chunks, self.run_many(client, calls), strict=True):
            for index, one in zip(chunk, reply, strict=True):
                replies[index] = one
        for one in replies:
            if isinstance(one, Exception):
                raise one
        return replies


def slot_of(key: str) -> int:
    """The cluster hash slot of ``key`` (its hash tag's): items of one slot share a call."""
    return key_slot(key.encode())
