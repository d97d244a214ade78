"""`homeward bench dispatch`: the real ladder in simulated time, the registry's geography."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alerts import escalation
from alerts.escalation import Policy
from locator.bench import dispatch, district
from locator.bench.dispatch import Alarm, Incident, Plan
from locator.bench.district import Geography, Volunteer
from locator.cli import app
from tests.conftest import Api
from tests.factories import HAINING, elder_body, volunteer_body

POLICY_LINE = re.compile(
    r"^(?P<name>.+?)\s+(?P<respond>\d+\.\d)%\s+(?P<onsite>\d+\.\d)%\s+"
    r"(?:\d+ s|> 60 min) / (?:\d+ s|> 60 min)\s+(?:\d+ s|> 60 min) / (?:\d+ s|> 60 min)\s+"
    r"\d+\.\d$"
)


def test_smoke_prints_every_policy_per_density_and_they_differ() -> None:
    result = CliRunner().invoke(
        app, ["bench", "dispatch", "--alarms", "20", "--densities", "2,8", "--no-plot"]
    )
    assert result.exit_code == 0, result.output
    blocks = result.output.split("\ndensity ")[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == ["2", "8"]
    for block in blocks:
        rows = [m for line in block.splitlines() if (m := POLICY_LINE.match(line))]
        assert [m["name"] for m in rows] == list(dispatch.POLICIES), block
        respond = [float(m["respond"]) for m in rows]
        # Paging only the pair cannot answer as fast as paging ten within 3 km.
        assert respond[0] < respond[3], block
        assert len(set(respond)) > 1


def test_same_seed_same_numbers_and_more_volunteers_help() -> None:
    one = dispatch.run(alarms=60, densities=(1.0, 16.0), seed=5)
    two = dispatch.run(alarms=60, densities=(1.0, 16.0), seed=5)
    assert dispatch.report(one) == dispatch.report(two)
    today = [r for r in one.rows if r.policy == "paired + 3 within 1 km (today)"]
    assert today[0].compliance("respond_s", 180) < today[1].compliance("respond_s", 180)
    assert today[0].volunteers < today[1].volunteers


def test_answer_probability_follows_the_stated_day() -> None:
    assert dispatch.answer_probability(2) == pytest.approx(0.17)
    assert dispatch.answer_probability(14) == pytest.approx(0.47)
    assert 0.17 < dispatch.answer_probability(8) < 0.47


def _line_of(*metres: float) -> Geography:
    people = [Volunteer(i + 1, d, 0.0) for i, d in enumerate(metres)]
    return Geography("line", 1.0, [(0.0, 0.0)], [[1]], people)


def _plan(answer: str, react_s: float, *, speed: float = 5.0, voice_yes: bool = False) -> Plan:
    return Plan(answer, react_s, voice_yes, 10.0, ready_s=30.0, speed_mps=speed)


def test_a_decline_pages_the_next_nearest_and_an_accept_stands_the_rest_down() -> None:
    # Volunteer 1 is paired (600 m); 2 and 3 are the nearest within 1 km; 4 is the next one.
    geo = _line_of(600.0, 200.0, 400.0, 800.0)
    incident = Incident(geo, Policy(nearby_count=2), Alarm(14 * 3600, 0.0, 0.0, 0), 0, 1)
    incident.plans = {
        1: _plan("silent", 30.0),
        2: _plan("no", 20.0),
        3: _plan("silent", 30.0),
        4: _plan("yes", 40.0),  # paged at 20 s by the decline: says yes at 60 s
    }
    outcome = incident.run()
    assert outcome.respond_s == pytest.approx(60.0)
    # 30 s to set off, then 800 m x 1.3 less the 100 m on-site radius at 5 m/s.
    assert outcome.onsite_s == pytest.approx(60.0 + 30.0 + (800 * 1.3 - 100) / 5.0)
    states = {vid: r["state"] for vid, r in incident.responders.items()}
    assert states == {
        1: escalation.STOOD_DOWN,
        2: escalation.DECLINED,
        3: escalation.STOOD_DOWN,
        4: escalation.ARRIVED,
    }
    assert outcome.paged == 4


def test_the_voice_step_wakes_a_silent_pair_and_quiet_hours_are_kept() -> None:
    geo = _line_of(300.0, 100.0)
    night = replace_quiet(geo, 2)
    incident = Incident(night, Policy(), Alarm(3 * 3600, 0.0, 0.0, 0), 0, 1)
    incident.plans = {1: _plan("silent", 30.0, voice_yes=True), 2: _plan("yes", 5.0)}
    outcome = incident.run()
    assert 2 not in incident.responders  # asleep: pick_nearest skipped her
    assert outcome.respond_s == pytest.approx(90.0 + 10.0)  # the call at 90 s, 10 s to answer
    assert math.isfinite(outcome.onsite_s)


def replace_quiet(geo: Geography, vid: int) -> Geography:
    quiet = {"start": "22:00", "end": "07:00"}
    people = [
        Volunteer(v.id, v.x, v.y, v.on_duty, quiet if v.id == vid else None) for v in geo.volunteers
    ]
    return Geography(geo.name, geo.area_km2, geo.homes, geo.pairs, people)


def test_nobody_answers_means_breaches_and_the_wide_ring_at_ten_minutes() -> None:
    geo = _line_of(300.0, 2500.0)
    incident = Incident(geo, Policy(), Alarm(12 * 3600, 0.0, 0.0, 0), 0, 1)
    incident.plans = {1: _plan("silent", 30.0), 2: _plan("yes", 5.0)}
    outcome = incident.run()
    # Volunteer 2 is beyond 1 km: only the on-site step's 3 km ring reaches her, at 600 s.
    assert incident.responders[2]["notified_at"] == 600.0
    assert outcome.respond_s == pytest.approx(605.0)
    assert outcome.onsite_s > 600.0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    result = dispatch.run(alarms=10, densities=(2.0, 4.0), seed=2)
    path = dispatch.plot(result, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_registry_geography_reads_the_live_registry(api: Api, redis_url: str) -> None:
    admin = api.auth("admin")

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await api.http.post(path, json=body, headers=admin)
        assert r.status_code in (200, 201), r.text
        out: dict[str, Any] = r.json()
        return out

    elder = await post("/api/v1/elders", elder_body())
    ids = []
    for n, (dlat, quiet) in enumerate([(0.005, None), (0.01, {"start": "22:00", "end": "07:00"})]):
        body = volunteer_body(n + 1, **({"quiet_hours": quiet} if quiet else {}))
        v = await post("/api/v1/volunteers", body)
        await post(
            f"/api/v1/volunteers/{v['id']}/location",
            {"lat": HAINING["lat"] + dlat, "lon": HAINING["lon"], "acc": 10},
        )
        ids.append(v["id"])
    await post("/api/v1/volunteers", volunteer_body(9))  # never shared a location: unseen
    r = await api.http.put(
        f"/api/v1/elders/{elder['id']}/pair", json={"volunteer_ids": [ids[0]]}, headers=admin
    )
    assert r.status_code == 200, r.text
    await post(
        "/api/v1/teams", {"name": "救援队", "members": [{"volunteer_id": ids[1], "role": "lead"}]}
    )

    geo = await district.registry_geography(redis_url)
    assert geo.pairs == [[ids[0]]]
    assert geo.homes == [(0.0, 0.0)]
    by_id = {v.id: v for v in geo.volunteers}
    assert sorted(by_id) == ids
    assert by_id[ids[0]].y == pytest.approx(556, abs=5)
    assert by_id[ids[1]].quiet_hours == {"start": "22:00", "end": "07:00"}
    assert by_id[ids[1]].team_role == "lead"
    assert 0.8 < geo.area_km2 < 3.0
    result = dispatch.run(alarms=5, densities=(4.0,), geography=geo)
    assert {r.density for r in result.rows} == {4.0, round(geo.density, 2)}
