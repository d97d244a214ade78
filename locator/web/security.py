"""Security headers on every answer: a Content-Security-Policy, no sniffing, no referrer,
no framing.

Pages get a policy that runs only our own scripts and styles from ``/static`` (no inline
script, no inline ``<style>``, no other origin) and loads images from here plus exactly
the map tile hosts ``HOMEWARD_MAP_TILES`` names. Everything else (JSON, CSV, photos,
the event stream) gets ``default-src 'none'``: opened on its own, nothing in it runs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The subdomains common.js gives Leaflet for {s}: AMap's 1-4, any other template a-c.
_AMAP = "https://webrd0{s}.is.autonavi.com/appmaptile"
_OSM = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def tile_sources(map_tiles: str) -> list[str]:
    """The origins the pages' map loads tiles from (CSP source expressions)."""
    template, subdomains = (
        (_AMAP, "1234")
        if map_tiles == "amap"
        else (_OSM if map_tiles == "osm" else map_tiles, "abc")
    )
    parts = urlsplit(template)
    hosts = (
        [parts.netloc.replace("{s}", s) for s in subdomains]
        if "{s}" in parts.netloc
        else [parts.netloc]
    )
    # A host still holding a placeholder is no origin a policy can name: its tiles stay out.
    return [f"{parts.scheme}://{h}" for h in hosts if h and "{" not in h and "}" not in h]


def page_policy(map_tiles: str) -> str:
    """The policy for HTML pages (and our scripts: a service worker runs under its own)."""
    images = " ".join(["'self'", "data:", "blob:", *tile_sources(map_tiles)])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "font-src 'self'",
            "worker-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers to every response start (streams too)."""

    def __init__(self, app: ASGIApp, *, map_tiles: str) -> None:
        self.app = app
        self.page = page_policy(map_tiles).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                runs = kind.startswith(b"text/html") or b"javascript" in kind
                extra = [
                    (b"content-security-policy", self.page if runs else API_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    # The volunteer page's address carries its signed link token.
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
