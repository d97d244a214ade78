"""Her stored record as other domains read it: a typed, frozen view of the elder's document.

Pure: the readers that fetch it live in ``devices/elders/service.py`` (``read_elder``); the
document itself is written only by the elders service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GuardianRecord:
    """One guardian as stored: their place in her list is their id in recipients."""

    name: str
    phone: str
    relation: str = ""


@dataclass(frozen=True)
class ElderRecord:
    """An elder's document, typed; a tombstone (deleted, kept for history) has ``deleted``."""

    id: int
    name: str
    home: tuple[float, float] | None
    guardians: tuple[GuardianRecord, ...]
    owner: str | None = None
    address: str = ""
    description: str = ""
    medical_notes: str = ""
    photo_url: str | None = None
    deleted: bool = False

    @property
    def live(self) -> bool:
        """Whether she exists and is not deleted (or being erased)."""
        return not self.deleted

    @classmethod
    def anonymous(cls, elder_id: int) -> ElderRecord:
        """A stand-in once she is gone: named by number, reaching no family phone."""
        return cls(id=elder_id, name=f"#{elder_id}", home=None, guardians=())


def elder_from_doc(doc: dict[str, Any], elder_id: int) -> ElderRecord:
    """The typed record of a decoded document."""
    home = doc.get("home")
    return ElderRecord(
        id=int(doc.get("id", elder_id)),
        name=str(doc.get("name", "")),
        home=(float(home["lat"]), float(home["lon"])) if home else None,
        guardians=tuple(
            GuardianRecord(
                name=str(g.get("name", "")),
                phone=str(g.get("phone") or ""),
                relation=str(g.get("relation") or ""),
            )
            for g in doc.get("guardians", [])
        ),
        owner=doc.get("owner"),
        address=str(doc.get("address") or ""),
        description=str(doc.get("description") or ""),
        medical_notes=str(doc.get("medical_notes") or ""),
        photo_url=doc.get("photo_url"),
        deleted=bool(doc.get("deleted_at")),
    )


def parse_elder(raw: str | bytes | None, elder_id: int) -> ElderRecord | None:
    """The typed record of a stored JSON document; None if there is none."""
    if raw is None or raw == "" or raw == b"":
        return None
    return elder_from_doc(json.loads(raw), elder_id)
