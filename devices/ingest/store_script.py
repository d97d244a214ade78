"""The store's Lua: the per-uplink script, the later stage that plugs its pieces into it, and
the dead-letter script. Assembled here only (``assemble``); run by ``pipeline.UplinkStore``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Protocol

from devices.ingest.position import Position
from locator.core.scripts import ItemScript, Script

_STORE_TEXT = resources.files("devices.ingest").joinpath("store_uplink.lua").read_text("utf-8")
# One call per batch, the body once per uplink (ItemScript); without the zone stage its
# slots stay comments.
STORE_SCRIPT = ItemScript(_STORE_TEXT, name="store_uplink.lua")


def assemble(pieces: Mapping[str, str]) -> ItemScript:
    """The store script with a later stage's pieces in place (the one place it is assembled).

    Each piece replaces the script's ``-- @zones <name>`` line; a name the script does not
    have is an error, so a renamed slot cannot drop a stage's writes silently.
    """
    text = _STORE_TEXT
    for name, piece in pieces.items():
        slot = re.search(rf"^-- @zones {re.escape(name)}\b.*$", text, flags=re.M)
        if slot is None:
            raise ValueError(f"the store script has no '-- @zones {name}' slot")
        text = text[: slot.start()] + piece.rstrip("\n") + text[slot.end() :]
    return ItemScript(text, name="store_uplink.lua+" + "+".join(sorted(pieces)))


# A rejected message is dead-lettered once, even if the broker delivers it again; the
# gateway dead-letters its frames through the same script.
DEAD_LETTER_SCRIPT = Script(
    """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', 3600) then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', 10000, '*', unpack(ARGV))
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
""",
    name="dead_letter",
)


class PreparedUpdate(Protocol):
    def args(self) -> tuple[str, str]:
        """(expected state version, update JSON) for the store script."""
        ...


class FixEvaluator(Protocol):
    """A later stage that evaluates fixes inside the store's commit (the zone engine).

    Injected by the shell: the devices domain cannot import geofences.
    """

    version_key: str

    def script_keys(self, elder_id: int) -> list[str]:
        """Its keys in the store script, after the fix's own (her slot): zone state, transitions."""
        ...

    def lua_pieces(self) -> Mapping[str, str]:
        """Its Lua for the store script's ``-- @zones <name>`` slots (``assemble``)."""
        ...

    def begin(self) -> None: ...

    def observe_version(self, version: int) -> None: ...

    def ensure_loaded(self, elder_ids: set[int]) -> None: ...

    def watches(self, elder_id: int) -> bool:
        """She has zones to evaluate (loaded): else ``prepare`` is not worth a Position."""
        ...

    def prepare(self, position: Position, *, low_quality: bool) -> Any: ...

    def settle(self, update: Any, *, applied: bool) -> None: ...

    def forget(self, elder_id: int) -> None: ...
