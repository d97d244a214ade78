"""The police hand-off pack: one printable page with what a 110 officer needs.

Photo, description, medical notes, guardians, the last known position and time, the last
hours of track drawn (an inline SVG: no tiles needed, prints anywhere) and listed, the
search area rings, and the incident's timeline. The browser's "print to PDF" makes the PDF.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from devices.elders.records import ElderRecord
from devices.telemetry.positions import LastPosition
from geofences.geometry import LocalFrame

TRACK_HOURS = 3
MAX_ROWS = 60

# Styles and the print button's script are static files: the page's policy allows no inline
# <style> or script (a name on it must never run as code).
STYLESHEET = "/static/handoff.css"
SCRIPT = "/static/handoff.js"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _local(epoch: float | None, tz: ZoneInfo) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, tz=tz).strftime("%Y-%m-%d %H:%M:%S")


SOURCES = {
    "bracelet_fix": "手环定位 bracelet fix",
    "family": "家属所述 family's word",
    "report": "按报告时间 time of the report",
    "sighting": "目击 sighting",
}


def ago(seconds: float) -> str:
    """ "2 小时 05 分 / 2 h 05 min" (minutes only under an hour)."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} 分钟 / {minutes} min"
    return f"{minutes // 60} 小时 {minutes % 60:02d} 分 / {minutes // 60} h {minutes % 60:02d} min"


def last_seen_line(area: dict[str, Any], tz: ZoneInfo) -> str:
    """The search area's starting point in words: how long ago, when, where, who said so."""
    props = area.get("properties") or {}
    origin = props.get("origin")
    if not origin:
        return ""
    when = datetime.fromisoformat(str(origin["time"]).replace("Z", "+00:00")).astimezone(tz)
    return (
        f"{ago(float(props.get('elapsed_s') or 0))} 前 ago ({when:%H:%M}) · "
        f"{origin['at']['lat']:.6f}, {origin['at']['lon']:.6f} (WGS-84) · "
        f"依据 from: {SOURCES.get(origin.get('source'), origin.get('source'))}"
    )


def _svg(track: list[dict[str, float]], area: dict[str, Any], size: int = 520) -> str:
    """Track, last position and rings in a local metric frame, north up, with a scale bar."""
    features = area.get("features", [])
    if not features:
        return ""
    lon0, lat0 = features[0]["geometry"]["coordinates"]
    frame = LocalFrame(lat0, lon0)
    points = [frame.xy(p["lat"], p["lon"]) for p in track]
    rings = [f for f in features if f["geometry"]["type"] == "Polygon"]
    extent = max(
        [200.0]
        + [abs(float(c)) for x, y in points for c in (x, y)]
        + [f["properties"].get("radius_m", 0) + f["properties"].get("shift_m", 0) for f in rings]
    )
    scale = (size / 2 - 10) / extent

    def px(x: float, y: float) -> tuple[float, float]:
        return size / 2 + x * scale, size / 2 - y * scale

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
        f"viewBox='0 0 {size} {size}' role='img' aria-label='track and search area'>"
    ]
    for f in reversed(rings):
        coords = f["geometry"]["coordinates"][0]
        path = " ".join(
            "{:.1f},{:.1f}".format(*px(*map(float, frame.xy(lat, lon)))) for lon, lat in coords
        )
        p = f["properties"].get("probability", 0)
        parts.append(
            f"<polygon points='{path}' fill='rgba(220,60,40,{0.05 + 0.1 * (1 - p):.2f})' "
            f"stroke='#c33' stroke-width='1'/>"
        )
    if len(points) > 1:
        path = " ".join("{:.1f},{:.1f}".format(*px(float(x), float(y))) for x, y in points)
        parts.append(f"<polyline points='{path}' fill='none' stroke='#1565c0' stroke-width='2'/>")
    cx, cy = px(0, 0)
    parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='6' fill='#c00'/>")
    bar = 10 ** math.floor(math.log10(extent))
    parts.append(
        f"<line x1='10' y1='{size - 12}' x2='{10 + bar * scale:.1f}' y2='{size - 12}' "
        f"stroke='#000' stroke-width='3'/><text x='12' y='{size - 18}' font-size='12'>"
        f"{bar:.0f} m</text><text x='{size - 20}' y='20' font-size='14'>N↑</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def render(
    *,
    incident: dict[str, Any],
    elder: ElderRecord | None,
    position: LastPosition | None,
    track: list[dict[str, float]],
    area: dict[str, Any],
    tz: ZoneInfo,
) -> str:
    """The whole page (zh-CN labels with English beside, for any officer)."""
    f = incident
    her = elder or ElderRecord(id=0, name="", home=None, guardians=())
    photo = (
        f"<img alt='photo' src='{_e(her.photo_url)}'>"
        if her.photo_url
        else "<div>（无照片 no photo）</div>"
    )
    guardians = "".join(
        f"<tr><td>{_e(g.name)}</td><td>{_e(g.relation)}</td><td>{_e(g.phone)}</td></tr>"
        for g in her.guardians
    )
    # The fix decided on when there is one, else whatever came last.
    fix = position.good if position else None
    last_lat = fix.lat if fix else (position.lat if position else None)
    last_lon = fix.lon if fix else (position.lon if position else None)
    last_t = fix.tst if fix else (position.tst if position else None)
    last_acc = fix.acc if fix else (position.acc if position else None)
    rings = "".join(
        f"<tr><td>{int(r['properties']['probability'] * 100)}%</td>"
        f"<td>{r['properties']['radius_m']:.0f} m</td><td>{_e(r['properties'].get('capped_by'))}</td></tr>"
        for r in area.get("features", [])
        if r["properties"].get("kind") == "ring"
    )
    track_rows = "".join(
        f"<tr><td>{_local(p['tst'], tz)}</td><td>{p['lat']:.6f}</td><td>{p['lon']:.6f}</td>"
        f"<td>{p.get('acc', 0):.0f}</td></tr>"
        for p in list(reversed(track))[:MAX_ROWS]
    )
    timeline = "".join(
        f"<tr><td>{_e(e.get('at'))}</td><td>{_e(e.get('type'))}</td><td>{_e(e.get('actor'))}</td>"
        f"<td>{_e(e.get('channel'))}</td><td>{_e(_detail(e))}</td></tr>"
        for e in f["timeline"]
    )
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>协查单 Hand-off · {_e(her.name)} · {_e(f["code"])}</title><link rel="stylesheet" href="{STYLESHEET}"></head><body>
<button id="print" type="button">打印 / Print</button>
<h1>走失老人协查单 Missing person hand-off</h1>
<p>事件 Incident #{_e(f["id"])} · 编号 code {_e(f["code"])} · 状态 {_e(f["status"])} ·
触发 {_e(f["trigger"])} · 开始 t0 {_e(f["t0"])}</p>
<div class="grid"><div>{photo}</div><div><table class="meta">
<tr><td>姓名 Name</td><td><b>{_e(her.name)}</b></td></tr>
<tr><td>住址 Address</td><td>{_e(her.address)}</td></tr>
<tr><td>体貌 Description</td><td>{_e(her.description)}</td></tr>
<tr><td>病情 Medical</td><td>{_e(her.medical_notes)}</td></tr>
<tr><td>最后看到 Last seen</td><td id="last-seen">{_e(last_seen_line(area, tz))}</td></tr>
<tr><td>最后定位 Last fix</td><td>{_e(last_lat)}, {_e(last_lon)} (WGS-84) ·
{_local(last_t or None, tz)} · ±{_e(last_acc)} m</td></tr>
</table></div></div>
<h2>监护人 Guardians</h2><table><tr><th>姓名</th><th>关系</th><th>电话</th></tr>{guardians}</table>
<h2>轨迹与搜索范围 Track and search area</h2>{_svg(track, area)}
<table><tr><th>概率 probability</th><th>半径 radius</th><th>依据 capped by</th></tr>{rings}</table>
<h2>最近{TRACK_HOURS}小时轨迹 Track, last {TRACK_HOURS} h</h2>
<table><tr><th>时间</th><th>纬度 lat</th><th>经度 lon</th><th>精度 m</th></tr>{track_rows}</table>
<h2>时间线 Timeline</h2>
<table><tr><th>时间</th><th>事件</th><th>执行者</th><th>渠道</th><th>详情</th></tr>{timeline}</table>
<script src="{SCRIPT}"></script>
</body></html>"""


def _detail(entry: dict[str, Any]) -> str:
    skip = {"at", "type", "actor", "channel"}
    return ", ".join(f"{k}={v}" for k, v in entry.items() if k not in skip and v not in (None, ""))
