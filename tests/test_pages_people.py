"""The volunteer page and the family portal in a real browser (Debian chromium), against the
real app, ingest and alerts workers on loopback: a guardian registers an elder, pairs a
bracelet, draws zones with a night schedule; the bracelet walks her out over MQTT; a paired
volunteer opens the SMS link on a phone-sized screen, accepts, shares a location and is on
site; the family sees the incident and its outcome; another family gets a 403 page.

Plain (non-async) tests: Playwright's sync API cannot run inside an asyncio loop's thread,
so data is set up through the live server's HTTP API and sync Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from alerts import keys as alerts_keys
from alerts import links
from alerts.incidents import storage
from alerts.incidents.config import config_from
from devices import keys as devices_keys
from devices.registry import gateway as gateway_state
from geofences.geometry import LocalFrame
from locator.alerts_loop import start_workers
from locator.app import create_app
from locator.core import crs, shards
from locator.core.auth import Role, create_token
from locator.core.clock import ManualClock
from locator.core.mqtt import MqttPublisher
from locator.core.redis import sync_client
from locator.core.settings import Settings, load_settings
from tests import browser as harness
from tests.browser import LiveServer, free_port, login, no_overlap, shot
from tests.factories import HAINING
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.servers import clean_homeward_keys

browser = harness.browser  # Debian's chromium, per module (never a downloaded one)
PHONE = {"width": 390, "height": 844}
FRAME = LocalFrame(HAINING["lat"], HAINING["lon"])


def north(metres: float) -> dict[str, float]:
    lat, lon = FRAME.latlon(0, metres)
    return {"lat": lat, "lon": lon}


def mint(redis_url: str, role: Role, subject: str | None = None) -> str:
    """A token, minted on a worker thread (no asyncio loop in the Playwright thread)."""

    async def make() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            token, _ = await create_token(
                client, role=role, subject=subject, created_at=time.time()
            )
            return token
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


@dataclass
class Site:
    url: str
    http: httpx.Client
    tokens: dict[str, str]
    client: redis.Redis
    clock: ManualClock
    redis_url: str
    settings: Settings

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@contextmanager
def running_site(redis_url: str, mqtt_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Site]:
    clean_homeward_keys(redis_url)
    clock = ManualClock()
    port = free_port()
    settings = load_settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{port}", **overrides)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=clock)
    tokens = {
        "admin": mint(redis_url, Role.ADMIN),
        "guardian_a": mint(redis_url, Role.GUARDIAN, "fam-a"),
        "guardian_b": mint(redis_url, Role.GUARDIAN, "fam-b"),
    }
    client = sync_client(redis_url, process="test")
    try:
        with (
            LiveServer(app, port=port) as live,
            httpx.Client(base_url=live.url, timeout=10) as http,
        ):
            yield Site(live.url, http, tokens, client, clock, redis_url, settings)
    finally:
        client.close()


@pytest.fixture
def site(redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Site]:
    with running_site(redis_url, mqtt_url, tmp_path) as running:
        yield running


def sent_link(site: Site, incident_id: int, vid: int) -> str | None:
    """The link a volunteer's SMS carries: the log says "link sent", and with no SMS
    provider here it is signed from the attempt as the SMS channel signs it at send time."""
    log = site.http.get(
        f"/api/v1/notifications?incident_id={incident_id}", headers=site.as_("admin")
    ).json()
    for item in log["items"]:
        if item["recipient"] != f"volunteer:{vid}" or "?t=" in item["text"]:
            continue
        data = json.loads(str(site.client.hget(alerts_keys.attempt(item["id"]), "data") or "{}"))
        if "link_expires" in data:
            sent = links.fill(
                item["text"],
                links.secret(site.client),
                public_url=site.settings.public_url,
                locale="zh-CN",
                incident_id=incident_id,
                volunteer_id=vid,
                expires=data["link_expires"],
            )
            found = re.search(r"(http://\S+/v/\d+\?t=[\w.\-]+)", sent)
            return found.group(1) if found else None
    return None


def camera_png(width: int = 4000, height: int = 3000) -> bytes:
    """A camera-sized picture (a gradient: small as PNG, big in pixels)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, 96, 160))
    rows = row * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _points(page: Any) -> list[list[float]]:
    """The WGS-84 points the page says it drew ("lat, lon" per line), as GeoJSON [lon, lat]."""
    out = []
    for text in page.locator("#draft-points li").all_text_contents():
        lat, lon = (float(x) for x in text.split(","))
        out.append([lon, lat])
    return out


def _tap_map(page: Any, dx: float, dy: float) -> None:
    """Tap the map this many pixels from its centre (scrolled into view first)."""
    page.locator("#map").scroll_into_view_if_needed()
    box = page.locator("#map").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy)


def _register_pair_and_draw(site: Site, page: Any) -> int:
    base = site.url
    login(page, base, site.tokens["guardian_a"], next_path="/family")
    page.wait_for_selector("#register:not(.hidden)")
    page.fill("#e-name", "张阿婆")
    page.fill("#e-address", "海宁市西山社区 3 幢")
    page.fill("#e-lat", str(HAINING["lat"]))
    page.fill("#e-lon", str(HAINING["lon"]))
    page.fill("#e-photo", f"{base}/static/elder.svg")
    page.fill("#e-description", "灰色外套，拄拐杖，身高约155厘米")
    page.fill("#e-medical", "阿尔茨海默病中期；每日服用多奈哌齐")
    rows = page.locator("#guardians .guardian")
    rows.nth(0).locator(".g-name").fill("李明")
    rows.nth(0).locator(".g-phone").fill("+8613800138000")
    rows.nth(0).locator(".g-relation").fill("儿子")
    page.click("#add-guardian")
    rows.nth(1).locator(".g-name").fill("王芳")
    rows.nth(1).locator(".g-phone").fill("+8613800138001")
    rows.nth(1).locator(".g-relation").fill("女儿")
    phone_box = rows.nth(1).locator(".g-phone").bounding_box()
    assert phone_box is not None and phone_box["width"] >= 250  # a whole +86 number shows
    no_overlap(page, ["#guardians .guardian:nth-of-type(2) .g-name", "#add-guardian"])
    page.click("#register button[type=submit]")
    page.wait_for_url(re.compile(r"/family/elders/\d+$"))
    elder_id = int(page.url.rsplit("/", 1)[1])
    elder = site.http.get(f"/api/v1/elders/{elder_id}", headers=site.as_("guardian_a")).json()
    assert elder["home"] == HAINING and elder["owner"] == "fam-a"
    assert elder["photo_url"] == f"{base}/static/elder.svg"
    assert elder["medical_notes"] == "阿尔茨海默病中期；每日服用多奈哌齐"
    assert [(g["name"], g["phone"], g["relation"]) for g in elder["guardians"]] == [
        ("李明", "+8613800138000", "儿子"),
        ("王芳", "+8613800138001", "女儿"),
    ]

    # Pair a native bracelet from stock, with the code printed on its box.
    stocked = site.http.post(
        "/api/v1/devices/stock",
        json={"device_id": "b-1", "protocol": "native"},
        headers=site.as_("admin"),
    )
    assert stocked.status_code == 201, stocked.text
    page.fill("#d-id", "b-1")
    page.fill("#d-code", stocked.json()["claim_code"].lower())
    page.select_option("#d-protocol", "native")
    page.click("#pair button[type=submit]")
    page.wait_for_selector("#pair.hidden", state="attached")
    device = site.http.get("/api/v1/devices/b-1", headers=site.as_("guardian_a")).json()
    assert device["elder_id"] == elder_id and device["protocol"] == "native"

    # A 200 m safe circle around home, drawn with a tap on the map.
    page.wait_for_selector("#map.leaflet-container")
    page.fill("#z-name", "家附近")
    page.fill("#z-radius", "200")
    _tap_map(page, 0, 0)
    circle = _points(page)
    assert len(circle) == 1
    page.click("#zone-save")
    page.wait_for_selector("#zones li.zone")
    # A polygon (the house and garden) that counts only at night: 20:00–07:00 every day.
    page.check("input[name=shape][value=polygon]")
    page.fill("#z-name", "夜间在家")
    for dx, dy in ((-30, -30), (30, -30), (30, 30), (-30, 30)):
        _tap_map(page, dx, dy)
    polygon = _points(page)
    assert len(polygon) == 4
    page.check("#z-night")
    page.fill("#z-start", "20:00")
    page.fill("#z-end", "07:00")
    page.click("#zone-save")
    page.wait_for_function("() => document.querySelectorAll('#zones li.zone').length === 2")

    zones = site.http.get(f"/api/v1/elders/{elder_id}/zones", headers=site.as_("admin")).json()
    by_type = {z["geometry"]["type"]: z for z in zones["items"]}
    assert by_type["Point"]["geometry"]["coordinates"] == circle[0]
    assert by_type["Point"]["properties"]["radius_m"] == 200
    assert by_type["Point"]["properties"]["kind"] == "safe"
    assert by_type["Point"]["properties"].get("schedule") is None
    assert by_type["Point"]["properties"]["name"] == "家附近"
    assert by_type["Polygon"]["geometry"]["coordinates"] == [[*polygon, polygon[0]]]
    assert by_type["Polygon"]["properties"]["schedule"] == [
        {"days": [1, 2, 3, 4, 5, 6, 7], "start": "20:00", "end": "07:00"}
    ]
    return elder_id


def test_family_registers_bracelet_walks_out_volunteer_accepts_on_site_family_sees_it(
    site: Site, browser: Any, mqtt_url: str, tmp_path: Path
) -> None:
    family = browser.new_context(viewport=PHONE, locale="zh-CN")
    page = family.new_page()
    elder_id = _register_pair_and_draw(site, page)

    # The elder's paired volunteers (dispatch's job, not the family's).
    vids = []
    for n in (1, 2):
        body = {"name": f"志愿者{n}", "phone": f"+86139000000{n:02d}", "on_duty": True}
        r = site.http.post("/api/v1/volunteers", json=body, headers=site.as_("admin"))
        assert r.status_code == 201, r.text
        vids.append(r.json()["id"])
    r = site.http.put(
        f"/api/v1/elders/{elder_id}/pair", json={"volunteer_ids": vids}, headers=site.as_("admin")
    )
    assert r.status_code == 200, r.text

    # The bracelet walks her out, through the broker, the real ingest and the alerts workers.
    cfg = config_from(site.settings, clock=site.clock, mqtt_url=mqtt_url)
    publisher = MqttPublisher(mqtt_url, client_id=f"test-pages-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    workers = start_workers(site.client, cfg, publisher=publisher, stop=stop, data_dir=tmp_path)
    ingest = RunningIngest(mqtt_url, site.redis_url, tmp_path, site.clock)
    bracelet = Publisher(mqtt_url)
    try:
        for n, metres in enumerate((0, 0, 400, 420), start=1):
            site.clock.advance(15)
            fix = {"_type": "location", **north(metres), "tst": site.clock.time(), "acc": 10}
            bracelet.send("homeward/devices/b-1/up", {**fix, "batt": 80})
            ingest.wait_processed(n)
        wait_for(lambda: storage.open_incident_id(site.client, elder_id) is not None)
        incident_id = storage.open_incident_id(site.client, elder_id)
        assert incident_id is not None

        # The SMS the first paired volunteer got carries the signed link.
        def link() -> str | None:
            return sent_link(site, incident_id, vids[0])

        wait_for(lambda: link() is not None)
        sms_link = link()
        assert sms_link is not None and sms_link.startswith(site.url)

        # The volunteer, on a phone, standing by the elder's last fix.
        here = north(430)
        volunteer = browser.new_context(
            viewport=PHONE,
            locale="zh-CN",
            permissions=["geolocation"],
            geolocation={"latitude": here["lat"], "longitude": here["lon"], "accuracy": 15},
        )
        vpage = volunteer.new_page()
        vpage.goto(sms_link)
        vpage.wait_for_selector("#answer:not(.hidden)")
        assert "张阿婆" in vpage.text_content("#elder-name")
        vpage.wait_for_function(
            "() => document.getElementById('description').textContent.length > 0"
        )
        assert "灰色外套" in vpage.text_content("#description")
        assert "t=" not in vpage.url  # the token is out of the address bar
        amap = vpage.get_attribute("#nav-amap", "href")
        baidu = vpage.get_attribute("#nav-baidu", "href")
        assert amap and "coordinate=wgs84" in amap and baidu and "coord_type=wgs84" in baidu
        assert vpage.get_attribute("#nav-geo", "href", timeout=1000).startswith("geo:30.")
        no_overlap(vpage, ["#elder-name", "#accept", "#decline"])
        for button in ("#accept", "#decline"):
            box = vpage.locator(button).bounding_box()
            assert box and box["height"] >= 48 and box["width"] >= 300
        # Opening the link (twice: a link scanner) accepted nothing.
        vpage.reload()
        vpage.wait_for_selector("#answer:not(.hidden)")
        snap = storage.load(site.client, incident_id)
        assert snap.status == "open" and snap.responders[vids[0]]["state"] == "notified"
        shot(vpage, "volunteer-page")

        vpage.click("#accept")
        vpage.wait_for_selector("body[data-responder=accepted]")
        assert storage.load(site.client, incident_id).status == "acknowledged"
        vpage.click("#share")
        vpage.wait_for_selector("body[data-responder=arrived]", timeout=15000)
        snap = storage.load(site.client, incident_id)
        assert snap.status == "on_site" and snap.responders[vids[0]]["state"] == "arrived"
        no_overlap(vpage, ["#share", "#found", "#withdraw"])
        vpage.evaluate("window.scrollTo(0, 0)")
        shot(vpage, "volunteer-on-site")

        # Her list of alerts (/v) has it, with her answer; the duty switch is hers to flip.
        vpage.goto(f"{site.url}/v")
        card = vpage.locator(f"a.alert-link[href='/v/{incident_id}']")
        card.wait_for()
        assert "已到场" in card.text_content()
        vpage.uncheck("#on-duty")
        vpage.wait_for_selector("#me-state:has-text('已保存')")
        me = site.http.get(f"/api/v1/volunteers/{vids[0]}", headers=site.as_("admin")).json()
        assert me["on_duty"] is False
        card.click()
        vpage.wait_for_selector("body[data-responder=arrived]")
        vpage.select_option("#outcome", "found_safe")
        vpage.fill("#found-note", "在超市门口找到")
        vpage.click("#found")
        vpage.click("#confirm-yes")
        vpage.wait_for_selector("body[data-incident=resolved]")
        read = site.http.get(f"/api/v1/incidents/{incident_id}", headers=site.as_("admin"))
        assert read.json()["status"] == "resolved" and read.json()["outcome"] == "found_safe"
        volunteer.close()

        # The family sees the incident, who came and how it ended (live, no reload), plus her
        # track today.
        page.wait_for_selector(
            f"#incidents li[data-incident='{incident_id}'][data-status=resolved]"
        )
        item = page.locator(f"#incidents li[data-incident='{incident_id}']")
        assert "平安找到" in item.text_content()
        assert "志愿者1" in item.text_content()
        page.reload()  # the track is drawn from a fresh read, not followed live
        page.wait_for_selector(
            "#map path.track-line", state="attached"
        )  # a line due north: 0 px wide
        assert "当前位置" in page.text_content("#where")
        latest = page.text_content("#latest")
        assert "平安找到" in latest and "志愿者1" in latest
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "family-portal")
        # Pause ("he is with me") and resume, through the page.
        page.fill("#p-reason", "我带他去医院")
        page.click("#pause")
        page.wait_for_selector("body[data-paused='1']")
        pause = site.http.get(f"/api/v1/elders/{elder_id}/pause", headers=site.as_("admin"))
        assert pause.status_code == 200 and pause.json()["reason"] == "我带他去医院"
        page.click("#resume")
        page.wait_for_selector("body[data-paused='']", state="attached")
        family.close()
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
        bracelet.close()
        ingest.close()
        publisher.close()


def test_owntracks_pairing_settings_and_another_familys_elder_is_a_403_page(
    site: Site, browser: Any
) -> None:
    body = {
        "name": "王老伯",
        "home": HAINING,
        "guardians": [{"name": "王强", "phone": "+8613800138009", "relation": "son"}],
    }
    theirs = site.http.post("/api/v1/elders", json=body, headers=site.as_("guardian_a")).json()
    mine = site.http.post(
        "/api/v1/elders", json={**body, "name": "陈奶奶"}, headers=site.as_("guardian_b")
    ).json()
    context = browser.new_context(viewport=PHONE, locale="en-US")
    page = context.new_page()
    login(page, site.url, site.tokens["guardian_b"], next_path="/family")
    page.wait_for_selector("#elders a.elder-link")
    assert page.locator("#elders a.elder-link").count() == 1  # only her own family's elder
    page.click("#elders a.elder-link")
    page.wait_for_url(f"**/family/elders/{mine['id']}")
    stocked = site.http.post(
        "/api/v1/devices/stock",
        json={"device_id": "phone-chen", "protocol": "owntracks"},
        headers=site.as_("admin"),
    )
    assert stocked.status_code == 201, stocked.text
    page.fill("#d-id", "phone-chen")
    page.fill("#d-code", stocked.json()["claim_code"])
    page.select_option("#d-protocol", "owntracks")
    page.fill("#d-ext", "chen/phone")
    page.click("#pair button[type=submit]")
    page.wait_for_selector("#owntracks:not(.hidden)")
    settings = page.text_content("#ot-text")
    assert "Topic: owntracks/chen/phone" in settings and "DeviceID: phone" in settings
    assert re.search(r"Port: \d+", settings)
    device = site.http.get("/api/v1/devices/phone-chen", headers=site.as_("admin")).json()
    assert device["protocol"] == "owntracks" and device["external_id"] == "chen/phone"
    # The same settings as a QR code for the phone's camera, and as the app's import URL.
    page.wait_for_function(
        "() => document.getElementById('ot-qr').src.startsWith('data:image/svg+xml')"
    )
    opened = page.get_attribute("#ot-open", "href") or ""
    assert opened.startswith("owntracks:///config?inline=")
    config = json.loads(base64.b64decode(opened.split("inline=", 1)[1]))
    assert config["_type"] == "configuration" and config["mode"] == 0
    assert (config["username"], config["deviceId"], config["cmd"]) == ("chen", "phone", True)
    assert config["host"] == "127.0.0.1"  # where this page reached us, not a loopback guess
    natives = site.http.post(
        "/api/v1/devices",
        json={"device_id": "b-wang", "elder_id": theirs["id"]},
        headers=site.as_("admin"),
    )
    assert natives.status_code == 201
    refused = site.http.get("/api/v1/devices/b-wang/owntracks", headers=site.as_("admin"))
    assert refused.status_code == 422 and "OwnTracks" in refused.text
    other = site.http.get("/api/v1/devices/phone-chen/owntracks", headers=site.as_("guardian_a"))
    assert other.status_code in (403, 404)

    # A GT06 bracelet: the device card says its protocol, connection and last answer.
    gt06_elder = site.http.post(
        "/api/v1/elders", json={**body, "name": "陈爷爷"}, headers=site.as_("guardian_b")
    ).json()
    imei = "359710040000077"
    bound = site.http.post(
        "/api/v1/devices",
        json={"device_id": imei, "elder_id": gt06_elder["id"], "protocol": "gt06"},
        headers=site.as_("admin"),
    )
    assert bound.status_code == 201, bound.text
    with ThreadPoolExecutor(1) as pool:  # no asyncio loop in the Playwright thread
        pool.submit(asyncio.run, gateway_saw(site.redis_url, imei, site.clock.time())).result()
    page.goto(f"{site.url}/family/elders/{gt06_elder['id']}")
    page.wait_for_selector("#device-state:has-text('GT06')")
    card = page.text_content("#device-state") or ""
    assert "已连接" in card and "最近连接" in card, card  # the page is in Chinese until switched
    assert "最近指令 reportLocation → 回复 DWXX OK" in card, card

    # Another family's elder: a 403 page, and the API agrees.
    response = page.goto(f"{site.url}/family/elders/{theirs['id']}")
    assert response is not None and response.status == 403
    assert "Not allowed" in page.text_content("#refused")
    assert page.evaluate(f"fetch('/api/v1/elders/{theirs['id']}').then(r => r.status)") == 403
    # English: the switch is remembered.
    page.goto(f"{site.url}/family")
    page.click("#lang")
    page.wait_for_selector("text=My family")
    context.close()


async def gateway_saw(redis_url: str, device_id: str, now: float) -> None:
    """What the gateway records when a bracelet connects, gets a command and answers it."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await gateway_state.hold(client, device_id=device_id, gateway="gw-1", ttl_s=60, now=now)
        await gateway_state.record_command(
            client, device_id=device_id, command="reportLocation", now=now
        )
        await gateway_state.record_answer(
            client, device_id=device_id, answer="command_reply DWXX OK", now=now
        )
    finally:
        await client.aclose()


def test_zones_drawn_on_amap_tiles_are_stored_in_wgs84(
    redis_url: str, mqtt_url: str, tmp_path: Path, browser: Any
) -> None:
    """AMap draws in GCJ-02 (about 500 m off around Haining): a tap on the middle of the
    map, centred on her home, is stored as her home in WGS-84, not 500 m away."""
    with running_site(redis_url, mqtt_url, tmp_path, map_tiles="amap") as site:
        body = {
            "name": "王老伯",
            "home": HAINING,
            "guardians": [{"name": "王强", "phone": "+8613800138009", "relation": "son"}],
        }
        elder = site.http.post("/api/v1/elders", json=body, headers=site.as_("guardian_a"))
        elder_id = elder.json()["id"]
        context = browser.new_context(viewport=PHONE)
        page = context.new_page()
        login(page, site.url, site.tokens["guardian_a"], next_path=f"/family/elders/{elder_id}")
        page.wait_for_selector("#map.leaflet-container")
        page.wait_for_selector("#zones-card")
        _tap_map(page, 0, 0)
        [drawn] = _points(page)
        page.click("#zone-save")
        page.wait_for_selector("#zones li.zone")
        zones = site.http.get(f"/api/v1/elders/{elder_id}/zones", headers=site.as_("admin"))
        [zone] = zones.json()["items"]
        lon, lat = zone["geometry"]["coordinates"]
        assert [lon, lat] == drawn
        assert crs.haversine_m(lat, lon, HAINING["lat"], HAINING["lon"]) < 15
        gcj_lat, gcj_lon = crs.wgs84_to_gcj02(HAINING["lat"], HAINING["lon"])
        assert crs.haversine_m(gcj_lat, gcj_lon, HAINING["lat"], HAINING["lon"]) > 300
        context.close()


def test_family_reports_missing_and_a_low_battery_notice_arrives_live(
    site: Site, browser: Any, mqtt_url: str, tmp_path: Path
) -> None:
    from tests.factories import elder_body

    made = site.http.post("/api/v1/elders", json=elder_body(), headers=site.as_("guardian_a"))
    assert made.status_code == 201, made.text
    elder_id = made.json()["id"]
    cfg = config_from(site.settings, clock=site.clock, mqtt_url=mqtt_url)
    publisher = MqttPublisher(mqtt_url, client_id=f"test-family-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    workers = start_workers(site.client, cfg, publisher=publisher, stop=stop, data_dir=tmp_path)
    context = browser.new_context(viewport=PHONE, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        login(page, site.url, site.tokens["guardian_a"], next_path=f"/family/elders/{elder_id}")
        page.wait_for_selector("#notices li.muted")  # nothing yet
        # A photo from the phone's album, uploaded (not a link): shown, and served to her.
        from tests.test_registry import tiny_png

        page.set_input_files(
            "#photo-file", files=[{"name": "a.png", "mimeType": "image/png", "buffer": tiny_png()}]
        )
        page.wait_for_function(
            "() => document.getElementById('photo').src.includes('/photo?v=')"
            " && document.getElementById('photo').naturalWidth === 1"
        )
        stored = site.http.get(f"/api/v1/elders/{elder_id}/photo", headers=site.as_("admin"))
        assert stored.content == tiny_png()
        # A camera-sized picture is shrunk in the page to 1600 px JPEG before it is sent.
        page.set_input_files(
            "#photo-file",
            files=[{"name": "camera.png", "mimeType": "image/png", "buffer": camera_png()}],
        )
        page.wait_for_function("() => document.getElementById('photo').naturalWidth === 1600")
        stored = site.http.get(f"/api/v1/elders/{elder_id}/photo", headers=site.as_("admin"))
        assert stored.headers["content-type"] == "image/jpeg"
        assert len(stored.content) <= 900 * 1024
        # "Report missing", confirmed once: an incident opens and shows without a reload.
        page.fill("#m-note", "穿灰色外套，在菜场走散")
        page.click("#missing")
        page.click("#confirm-yes")
        page.wait_for_selector("#incidents li[data-status=open]")
        listed = site.http.get(
            f"/api/v1/incidents?status=open&elder_id={elder_id}", headers=site.as_("admin")
        ).json()["items"]
        assert [(i["trigger"], i["note"]) for i in listed] == [
            ("missing", "穿灰色外套，在菜场走散")
        ]
        # The bracelet's battery runs low: the notice comes over the live feed.
        site.client.xadd(
            devices_keys.device_events(shards.shard_of(elder_id)),
            {
                "type": "low_battery",
                "elder_id": str(elder_id),
                "device_id": "b-1",
                "detail": "15% battery",
                "received_ms": str(int(site.clock.time() * 1000)),
            },
        )
        page.wait_for_selector("#notices li:has-text('15%')", timeout=10_000)
        assert not errors, errors
    finally:
        context.close()
        stop.set()
        for w in workers:
            w.join(timeout=5)
        publisher.close()


def test_volunteers_decline_and_withdraw_from_the_page_and_set_quiet_hours(
    site: Site, browser: Any
) -> None:
    from tests.factories import elder_body, volunteer_body

    made = site.http.post("/api/v1/elders", json=elder_body(), headers=site.as_("guardian_a"))
    elder_id = made.json()["id"]
    vids = []
    for n in (1, 2):
        vid = site.http.post(
            "/api/v1/volunteers", json=volunteer_body(n), headers=site.as_("admin")
        ).json()["id"]
        site.http.post(
            f"/api/v1/volunteers/{vid}/location",
            json={**north(100 * n), "acc": 10},
            headers=site.as_("admin"),
        ).raise_for_status()
        vids.append(vid)
    report = site.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder_id, "last_seen_at": north(50)},
        headers=site.as_("guardian_a"),
    )
    incident_id = report.json()["id"]

    def link_of(vid: int) -> str:
        found = sent_link(site, incident_id, vid)
        if found is None:
            raise AssertionError(f"no link for volunteer {vid}")
        return found

    def state(vid: int) -> str:
        return str(storage.load(site.client, incident_id).responders[vid]["state"])

    context = browser.new_context(viewport=PHONE, locale="zh-CN")
    first = context.new_page()
    first.goto(link_of(vids[0]))
    first.wait_for_selector("#answer:not(.hidden)")
    first.click("#decline")
    first.click("#confirm-yes")  # a decline asks once more
    first.wait_for_selector("body[data-responder=declined]")
    assert state(vids[0]) == "declined"
    other = browser.new_context(viewport=PHONE, locale="zh-CN")
    second = other.new_page()
    second.goto(link_of(vids[1]))
    second.wait_for_selector("#answer:not(.hidden)")
    second.click("#accept")
    second.wait_for_selector("body[data-responder=accepted]")
    second.click("#withdraw")
    second.click("#confirm-yes")
    second.wait_for_selector("body[data-responder=withdrawn]")
    assert state(vids[1]) == "withdrawn"
    assert storage.load(site.client, incident_id).status == "open"  # nobody is coming now
    # Quiet hours, saved from the same page.
    second.fill("#quiet-start", "22:00")
    second.fill("#quiet-end", "06:30")
    second.click("#quiet-save")
    second.wait_for_selector("#me-state:has-text('已保存')")
    me = site.http.get(f"/api/v1/volunteers/{vids[1]}", headers=site.as_("admin")).json()
    assert me["quiet_hours"] == {"start": "22:00", "end": "06:30"}
    context.close()
    other.close()
