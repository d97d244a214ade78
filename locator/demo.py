"""`homeward demo`: `run` plus a simulated district around Xishan, Haining.

A few dozen elders with bracelets and safe zones, paired volunteers, more volunteers about
the streets, a rescue team and an on-call dispatcher are registered through the real API.
Bracelets report over MQTT every few seconds. Every few minutes one elder walks out of her
zone; simulated volunteers answer as people do — one accepts and rides to her (sharing
their location until the service puts them on site), one declines, the rest never answer —
then she is found and the incident resolved. Tokens to log in with are printed and kept in
``DATA_DIR/demo.json`` (0600).
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from geofences.geometry import LocalFrame
from locator.core.logging import get_logger
from locator.core.mqtt import address
from locator.embedded import read_runtime
from locator.simulate import tcp

log = get_logger(__name__)

XISHAN = (30.5112, 120.6853)
FAMILY = "demo-family"  # the guardian subject of the demo family's token
FAMILY_ELDERS = 2
SURNAMES = "张王李赵刘陈杨黄周吴徐孙朱马胡郭林何高罗郑梁谢宋唐"
REPORT_EVERY_S = 10.0
WANDER_REPORT_S = 5.0
WALK_MPS = 1.4
RIDE_MPS = 6.0  # an e-bike through the lanes
ZONE_M = 150.0


@dataclass
class Elder:
    id: int
    device: str
    home: tuple[float, float]
    pair: list[int]
    wandering: bool = False
    heading: float = 0.0
    offset_m: float = 0.0  # how far from home along ``heading``
    incident: int | None = None
    protocol: str = "native"  # gt06/jt808: a bracelet on TCP through `homeward gateway`


# Four elders (not the family's) wear real-protocol bracelets, so the demo exercises the
# gateway: their fixes go as GT06 / JT/T 808 bytes over TCP, the rest as native MQTT.
GATEWAY_ELDERS = {2: "gt06", 3: "jt808", 4: "gt06", 5: "jt808"}


@dataclass
class Volunteer:
    id: int
    token: str
    at: tuple[float, float]
    target: int | None = None  # incident being ridden to


@dataclass
class District:
    base: str
    admin: str
    dispatcher: str = ""
    family: str = ""  # a guardian who owns the first two elders
    volunteer: int | None = None  # paired with the family's first elder; left to a person
    elders: list[Elder] = field(default_factory=list)
    volunteers: dict[int, Volunteer] = field(default_factory=dict)


class DemoDistrict:
    """Registers the district once, then plays it until ``stop``."""

    def __init__(
        self,
        *,
        base_url: str,
        mqtt_url: str,
        redis_url: str,
        data_dir: Path,
        elders: int = 24,
        first_after_s: float = 20.0,
        every_s: float = 180.0,
        volunteers_act: bool = True,
        seed: int = 1,
    ) -> None:
        self.base = base_url
        self.mqtt_url = mqtt_url
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.count = elders
        self.first_after_s = first_after_s
        self.every_s = every_s
        self.volunteers_act = volunteers_act
        self.rng = random.Random(seed)
        self.plans: dict[int, dict[int, tuple[str, float]]] = {}
        self.told: dict[int, str] = {}  # incident id -> the status last shown
        self._rode: dict[int, float] = {}

    # --- setting up -------------------------------------------------------------------------
    def setup(self, http: httpx.Client) -> District:
        saved = self.data_dir / "demo.json"
        if saved.exists():
            return self._load(saved, http)
        district = District(base=self.base, admin=self._token("admin", "demo"))
        h = {"Authorization": f"Bearer {district.admin}"}

        def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            r = http.request(method, path, json=body, headers=h)
            r.raise_for_status()
            return r.json() if r.content else None

        district.dispatcher = self._token("dispatcher")
        call(
            "POST",
            "/api/v1/dispatchers",
            {"name": "值班调度 王", "phone": "+8613700000001", "on_call": True},
        )
        frame = LocalFrame(*XISHAN)
        phone = 0

        def volunteer(name: str, at: tuple[float, float], **extra: Any) -> Volunteer:
            nonlocal phone
            phone += 1
            v = call(
                "POST",
                "/api/v1/volunteers",
                {"name": name, "phone": f"+86139{phone:08d}", "on_duty": True, **extra},
            )
            call(
                "POST",
                f"/api/v1/volunteers/{v['id']}/location",
                {"lat": at[0], "lon": at[1], "acc": 15},
            )
            token = self._token("volunteer", str(v["id"]))
            district.volunteers[v["id"]] = Volunteer(v["id"], token, at)
            return district.volunteers[v["id"]]

        district.family = self._token("guardian", FAMILY)
        for n in range(self.count):
            angle = self.rng.uniform(0, 2 * math.pi)
            dist = self.rng.uniform(100, 1600)
            home = frame.latlon(dist * math.sin(angle), dist * math.cos(angle))
            surname = SURNAMES[n % len(SURNAMES)]
            family = n < FAMILY_ELDERS  # the demo family: grandmother and grandfather Zhang
            guardian = (
                {"name": "张明", "phone": "+8613800000000", "relation": "son"}
                if family
                else {"name": f"{surname}先生", "phone": f"+86138{n:08d}", "relation": "son"}
            )
            elder = call(
                "POST",
                "/api/v1/elders",
                {
                    "name": f"{'张' if family else surname}{'阿婆' if n % 2 else '阿公'}",
                    "owner": FAMILY if family else None,
                    "home": {"lat": home[0], "lon": home[1]},
                    "address": f"海宁市西山社区{n + 1}幢",
                    "description": self.rng.choice(
                        ["灰色外套，拄拐杖", "蓝色上衣，戴帽子", "红色毛衣，步行缓慢"]
                    ),
                    "medical_notes": "阿尔茨海默病",
                    "guardians": [guardian],
                },
            )
            protocol = GATEWAY_ELDERS.get(n, "native")
            device = f"demo-{n + 1}" if protocol == "native" else tcp.device_id_for(protocol, 1, n)
            call(
                "POST",
                "/api/v1/devices",
                {
                    "device_id": device,
                    "elder_id": elder["id"],
                    "protocol": protocol,
                    "report_interval_s": int(REPORT_EVERY_S),
                },
            )
            call(
                "POST",
                f"/api/v1/elders/{elder['id']}/zones",
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [home[1], home[0]]},
                    "properties": {"kind": "safe", "radius_m": ZONE_M},
                },
            )
            local = LocalFrame(*home)
            pair = [
                volunteer(f"志愿者{2 * n + k + 1}", local.latlon(*self._scatter(300, 1200))).id
                for k in range(2)
            ]
            call("PUT", f"/api/v1/elders/{elder['id']}/pair", {"volunteer_ids": pair})
            district.elders.append(Elder(elder["id"], device, home, pair, protocol=protocol))
            if district.volunteer is None:
                district.volunteer = pair[0]
        for k in range(20):  # more volunteers about the streets
            volunteer(f"街坊{k + 1}", frame.latlon(*self._scatter(0, 1800)))
        team = [
            volunteer(f"救援队员{k + 1}", frame.latlon(*self._scatter(0, 800))).id for k in range(5)
        ]
        call(
            "POST",
            "/api/v1/teams",
            {
                "name": "海宁红船救援队",
                "members": [
                    {"volunteer_id": v, "role": "lead" if i == 0 else "member"}
                    for i, v in enumerate(team)
                ],
            },
        )
        self._save(saved, district)
        return district

    def _scatter(self, low: float, high: float) -> tuple[float, float]:
        angle, dist = self.rng.uniform(0, 2 * math.pi), self.rng.uniform(low, high)
        return dist * math.sin(angle), dist * math.cos(angle)

    def _token(self, role: str, subject: str | None = None) -> str:
        import asyncio

        from alerts.responders.service import volunteer_exists
        from locator.core.auth import Role, create_token
        from locator.core.redis import async_client

        async def mint() -> str:
            client = async_client(self.redis_url, process="demo")
            try:
                token, _ = await create_token(
                    client,
                    role=Role(role),
                    subject=subject,
                    created_at=time.time(),
                    volunteer_exists=lambda vid: volunteer_exists(client, volunteer_id=vid),
                )
                return token
            finally:
                await client.aclose()

        return asyncio.run(mint())

    def _save(self, path: Path, d: District) -> None:
        body = {
            "admin": d.admin,
            "dispatcher": d.dispatcher,
            "family": d.family,
            "volunteer": d.volunteer,
            "elders": [
                {
                    "id": e.id,
                    "device": e.device,
                    "home": e.home,
                    "pair": e.pair,
                    "protocol": e.protocol,
                }
                for e in d.elders
            ],
            "volunteers": {
                str(v.id): {"token": v.token, "at": v.at} for v in d.volunteers.values()
            },
        }
        path.write_text(json.dumps(body, ensure_ascii=False, indent=1))
        os.chmod(path, 0o600)

    def _load(self, path: Path, http: httpx.Client) -> District:
        body = json.loads(path.read_text())
        d = District(
            base=self.base,
            admin=body["admin"],
            dispatcher=body["dispatcher"],
            family=body.get("family", ""),
            volunteer=body.get("volunteer"),
        )
        d.elders = [
            Elder(
                e["id"],
                e["device"],
                (e["home"][0], e["home"][1]),
                e["pair"],
                protocol=e.get("protocol", "native"),
            )
            for e in body["elders"]
        ]
        d.volunteers = {
            int(k): Volunteer(int(k), v["token"], (v["at"][0], v["at"][1]))
            for k, v in body["volunteers"].items()
        }
        return d

    # --- playing ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Wait for the API, set up (once), then play until ``stop``."""
        with httpx.Client(base_url=self.base, timeout=10) as http:
            deadline = time.monotonic() + 60
            while not stop.is_set():
                try:
                    if http.get("/healthz").status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    log.error("demo_api_never_came_up", url=self.base)
                    say(f"demo: the API at {self.base} never came up; see the log")
                    return
                stop.wait(0.3)
            restarted = (self.data_dir / "demo.json").exists()
            try:
                district = self.setup(http)
                if restarted:
                    self._close_leftovers(district, http)
            except httpx.HTTPError as exc:
                log.error("demo_setup_failed", error=str(exc))
                say(f"demo: setting up the district failed ({exc}); see the log")
                return
            say(self.welcome(district))
            try:
                self._play(district, http, stop)
            except Exception as exc:
                if not stop.is_set():
                    raise
                # Ctrl-C stops the API, gateway and broker in their own order: a step caught
                # halfway (an answer that is not JSON any more) is not an error of the demo.
                log.info("demo_stopped_mid_step", error=f"{type(exc).__name__}: {exc}")

    def welcome(self, d: District) -> str:
        """The links to log in with, one per kind of user (the token rides in the fragment,
        which browsers never send to a server)."""

        def link(token: str) -> str:
            return f"{self.base}/login#token={token}"

        lines = [
            f"Demo district: {len(d.elders)} elders with bracelets and safe zones, "
            f"{len(d.volunteers)} volunteers, a rescue team and an on-call dispatcher.",
            f"  Dispatcher console: {link(d.dispatcher)}",
        ]
        if d.family:
            lines.append(f"  Family portal (the Zhang family, 2 elders): {link(d.family)}")
        if d.volunteer is not None and d.volunteer in d.volunteers:
            lines.append(
                f"  Volunteer page (paired with 张阿公, left to you): "
                f"{link(d.volunteers[d.volunteer].token)}"
            )
        lines.append(f"  (every demo token: {self.data_dir / 'demo.json'})")
        wait = max(0, round(self.first_after_s))
        lines.append(
            f"In about {wait} s 张阿公 walks out of his safe zone, then another elder every "
            f"{round(self.every_s)} s; each incident's changes are shown below."
        )
        return "\n".join(lines)

    def _close_leftovers(self, d: District, http: httpx.Client) -> None:
        """Incidents the previous run left open would sit on the board for ever: cancel them."""
        h = {"Authorization": f"Bearer {d.dispatcher}"}
        items = http.get("/api/v1/incidents?status=open&limit=200", headers=h).json()["items"]
        for incident in items:
            http.post(
                f"/api/v1/incidents/{incident['id']}/cancel",
                headers=h,
                json={"note": "demo restarted"},
            )
        if items:
            say(f"Closed {len(items)} incident(s) the previous demo run left open.")

    def _play(self, d: District, http: httpx.Client, stop: threading.Event) -> None:
        mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-{uuid.uuid4().hex[:6]}")
        host, port = address(self.mqtt_url)
        mqtt.connect(host, port)
        mqtt.loop_start()
        links: dict[str, tcp.TcpBracelet] = {}

        def send(elder: Elder) -> None:
            fix = self._fix(elder)
            if elder.protocol == "native":
                mqtt.publish(f"homeward/devices/{elder.device}/up", json.dumps(fix), qos=1)
                return
            link = links.get(elder.device)
            if link is None or link.closed:
                link = self._connect(elder)
                if link is None:
                    return
                links[elder.device] = link
            link.send_fix(fix)

        # Two fixes at home first: the zone engine needs two agreeing fixes to place her,
        # and a zone's first "outside" would otherwise be learned silently (GT06 times are
        # whole seconds: the two fixes are a second apart).
        for _ in range(2):
            for elder in d.elders:
                send(elder)
            stop.wait(1.1)
        started = time.monotonic()
        next_wander = started + self.first_after_s
        last_report: dict[int, float] = {}
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_wander:
                    calm = [e for e in d.elders if not e.wandering and e.incident is None]
                    if calm:
                        # The family's elder goes first: the printed family and volunteer
                        # links then have something to show.
                        first = next_wander == started + self.first_after_s
                        self._wander(
                            d.elders[0] if first and d.elders[0] in calm else self.rng.choice(calm)
                        )
                    next_wander = now + self.every_s
                for elder in d.elders:
                    every = WANDER_REPORT_S if elder.wandering else REPORT_EVERY_S
                    if now - last_report.get(elder.id, 0.0) >= every:
                        if elder.wandering:
                            elder.offset_m += WALK_MPS * (now - last_report.get(elder.id, now))
                        last_report[elder.id] = now
                        send(elder)
                for link in links.values():  # acks and commands: answered like the bracelet
                    for packet in link.receive():
                        link.answer(packet, time.time())
                try:
                    self._answer(d, http)
                except httpx.HTTPError as exc:
                    log.warning("demo_volunteers_failed", error=str(exc))
                stop.wait(1.0)
        finally:
            for link in links.values():
                link.close()
            mqtt.disconnect()
            mqtt.loop_stop()

    def _connect(self, elder: Elder) -> tcp.TcpBracelet | None:
        """The elder's bracelet socket to the gateway `run` started (ports in runtime.json)."""
        runtime = read_runtime(self.data_dir)
        port = (runtime.gateway or {}).get(elder.protocol) if runtime else None
        if port is None:
            log.warning("demo_no_gateway_port", protocol=elder.protocol)
            return None
        try:
            link = tcp.TcpBracelet(elder.protocol, elder.device, "127.0.0.1", port)
        except OSError as exc:
            log.warning("demo_gateway_unreachable", port=port, error=str(exc))
            return None
        link.login()
        return link

    def _wander(self, elder: Elder) -> None:
        # She leaves from the garden gate: just inside her zone, walking straight out.
        elder.wandering, elder.heading, elder.offset_m = True, self.rng.uniform(0, 360), ZONE_M + 20
        log.info("demo_wander", elder_id=elder.id)

    def _position(self, elder: Elder) -> tuple[float, float]:
        frame = LocalFrame(*elder.home)
        theta = math.radians(elder.heading)
        jitter = self.rng.uniform(-8, 8) if not elder.wandering else self.rng.uniform(-3, 3)
        return frame.latlon(
            elder.offset_m * math.sin(theta) + jitter, elder.offset_m * math.cos(theta) + jitter
        )

    def _fix(self, elder: Elder) -> dict[str, Any]:
        lat, lon = self._position(elder)
        return {
            "_type": "location",
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "tst": round(time.time(), 3),
            "acc": 10 if elder.wandering else 25,
            "batt": 80,
            "src": "gps",
            "vel": round(WALK_MPS * 3.6, 1) if elder.wandering else 0,
            "cog": round(elder.heading) if elder.wandering else 0,
        }

    def _answer(self, d: District, http: httpx.Client) -> None:
        """Simulated people: one accepts and rides over, one declines, the rest are silent."""
        h = {"Authorization": f"Bearer {d.dispatcher}"}
        open_ = http.get("/api/v1/incidents?status=open", headers=h).json()["items"]
        by_elder = {e.id: e for e in d.elders}
        live = set()
        for incident in open_:
            live.add(incident["id"])
            self._tell(incident)
            elder = by_elder.get(incident["elder_id"])
            if elder is not None:
                elder.incident = incident["id"]
            if not self.volunteers_act:
                continue
            plan = self.plans.setdefault(incident["id"], self._plan(incident, human=d.volunteer))
            elapsed = time.time() - _epoch(incident["t0"])
            for vid, (action, at) in list(plan.items()):
                volunteer = d.volunteers.get(vid)
                if volunteer is None or elapsed < at:
                    continue
                vh = {"Authorization": f"Bearer {volunteer.token}"}
                if action in ("ack", "decline"):
                    http.post(f"/api/v1/incidents/{incident['id']}/{action}", headers=vh)
                    plan[vid] = ("ride", at) if action == "ack" else ("done", at)
                elif action == "ride" and elder is not None:
                    if self._ride(volunteer, elder, http, vh):
                        plan[vid] = ("found", elapsed + 30)
                elif action == "found":
                    http.post(
                        f"/api/v1/incidents/{incident['id']}/found",
                        headers=vh,
                        json={"outcome": "found_safe", "note": "在路边找到，已送回家"},
                    )
                    plan[vid] = ("done", at)
                    if elder is not None:
                        elder.wandering, elder.offset_m, elder.incident = False, 0.0, None
        for elder in d.elders:
            if elder.incident is not None and elder.incident not in live:
                elder.incident, elder.wandering, elder.offset_m = None, False, 0.0
        for gone in set(self.told) - live:
            closed = http.get(f"/api/v1/incidents/{gone}", headers=h)
            if closed.status_code == 200:
                self._tell(closed.json())
            del self.told[gone]

    def _tell(self, incident: dict[str, Any]) -> None:
        """One terminal line per change a person watching the demo cares about."""
        before = self.told.get(incident["id"])
        status = incident["status"]
        self.told[incident["id"]] = status
        if before == status:
            return
        who = incident.get("elder_name") or f"#{incident['elder_id']}"
        label = f"incident {incident['code']} ({who})"
        if before is None and status in ("open", "acknowledged", "on_site"):
            trigger = TRIGGERS.get(incident["trigger"], incident["trigger"])
            say(f"{_now()}  {label} opened: {trigger}; volunteers and family alerted")
        if status == "acknowledged":
            say(f"{_now()}  {label} accepted by {_first(incident, 'accepted_at')}")
        elif status == "on_site":
            say(f"{_now()}  {label} on site: {_first(incident, 'arrived_at')}")
        elif status == "resolved":
            say(f"{_now()}  {label} resolved: {incident.get('outcome') or 'closed'}")
        elif status == "cancelled":
            say(f"{_now()}  {label} cancelled")

    def _plan(self, incident: dict[str, Any], *, human: int | None) -> dict[int, tuple[str, float]]:
        # The volunteer whose link the demo printed is left to the person holding it.
        people = [r["volunteer_id"] for r in incident["responders"] if r["volunteer_id"] != human]
        self.rng.shuffle(people)
        plan: dict[int, tuple[str, float]] = {}
        if people:
            plan[people[0]] = ("ack", self.rng.uniform(25, 70))
        if len(people) > 1:
            plan[people[1]] = ("decline", self.rng.uniform(10, 30))
        return plan  # the others never answer

    def _ride(self, v: Volunteer, elder: Elder, http: httpx.Client, h: dict[str, str]) -> bool:
        """One step toward her; True when the service has put them on site."""
        target = self._position(elder)
        frame = LocalFrame(*v.at)
        x, y = frame.xy(*target)
        distance = math.hypot(float(x), float(y))
        now = time.monotonic()
        step = min(distance, RIDE_MPS * max(0.5, now - self._rode.get(v.id, now - 1.0)))
        self._rode[v.id] = now
        if distance > 1:
            v.at = frame.latlon(float(x) / distance * step, float(y) / distance * step)
        http.post(
            f"/api/v1/volunteers/{v.id}/location",
            json={"lat": v.at[0], "lon": v.at[1], "acc": 10},
            headers=h,
        )
        incident = http.get(f"/api/v1/incidents/{elder.incident}", headers=h).json()
        return bool(incident.get("on_site_at"))


TRIGGERS = {
    "zone_exit": "left the safe zone",
    "danger_enter": "entered a danger zone",
    "sos": "SOS pressed",
    "fall": "fall detected",
    "removed": "bracelet taken off",
    "device_offline": "bracelet offline outside",
    "missing": "reported missing",
}


def say(line: str) -> None:
    """The demo's terminal is for people: short lines on stdout; the log has the rest."""
    print(line, flush=True)


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _first(incident: dict[str, Any], moment: str) -> str:
    """The name of the responder who did ``moment`` first."""
    done = [r for r in incident.get("responders", []) if r.get(moment)]
    done.sort(key=lambda r: str(r[moment]))
    if not done:
        return "a responder"
    return str(done[0].get("name") or f"volunteer #{done[0]['volunteer_id']}")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
