"""What makes two uplinks the same uplink: the dedupe ids the store script keeps."""

from __future__ import annotations

import hashlib

from devices.ingest.codecs import Fix


def fix_id(device_id: str, fix: Fix) -> str:
    """The identity of a fix: the same device, time, place and alarm is the same fix."""
    return fix_id_from_texts(device_id, repr(fix.tst), repr(fix.lat), repr(fix.lon), fix.alarm)


def fix_id_from_texts(device_id: str, tst: str, lat: str, lon: str, alarm: str | None) -> str:
    """``fix_id`` from the texts the store script gets anyway (each repr once)."""
    raw = f"{device_id}|{tst}|{lat}|{lon}|{alarm}".encode()
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def message_id(device_id: str, payload: bytes, suffix: str = "") -> str:
    """The identity of any other message: its device and exact bytes."""
    raw = device_id.encode() + b"\0" + payload
    return hashlib.blake2b(raw, digest_size=10).hexdigest() + suffix
