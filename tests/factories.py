"""Request bodies used across tests."""

from __future__ import annotations

from typing import Any

HAINING = {"lat": 30.5112, "lon": 120.6853}


def elder_body(name: str = "张阿婆", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "home": dict(HAINING),
        "address": "海宁市西山社区 3 幢",
        "description": "灰色外套，拄拐杖",
        "medical_notes": "阿尔茨海默病中期",
        "guardians": [{"name": "李明", "phone": "+8613800138000", "relation": "son"}],
    }
    body.update(extra)
    return body


def volunteer_body(n: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"志愿者{n}", "phone": f"+861390000{n:04d}", "on_duty": True}
    body.update(extra)
    return body
