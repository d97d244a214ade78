"""The zone engine without infrastructure: jitter, jumps, cell fixes, schedules, pauses."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from geofences.engine import FixInput, Zone, ZoneState, evaluate, evidence
from geofences.geometry import LocalFrame, project_geometry
from geofences.schedule import is_active

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOME = (30.5112, 120.6853)
FRAME = LocalFrame(*HOME)
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=SHANGHAI)


def circle(
    zone_id: str = "home",
    radius: float = 150,
    kind: str = "safe",
    schedule: list[dict[str, object]] | None = None,
) -> Zone:
    shape = project_geometry({"type": "Point", "coordinates": [HOME[1], HOME[0]]}, FRAME, radius)
    return Zone(zone_id, kind, shape, schedule)  # type: ignore[arg-type]


def at(
    metres_north: float, acc: float = 10, *, low: bool = False, alarm: str | None = None
) -> FixInput:
    lat, lon = FRAME.latlon(0, metres_north)
    return FixInput(lat=lat, lon=lon, accuracy_m=acc, low_quality=low, alarm=alarm)


class Walk:
    def __init__(self, *zones: Zone, settled_inside: bool = True) -> None:
        self.zones = list(zones)
        self.states: dict[str, ZoneState] = {}
        self.transitions: list[str] = []
        if settled_inside:
            self.fixes(at(0), at(0))

    def fixes(self, *fixes: FixInput, when: datetime = NOON, paused: bool = False) -> list[str]:
        out = []
        for fix in fixes:
            result = evaluate(self.zones, self.states, FRAME, fix, local_time=when, paused=paused)
            self.states = result.states
            out += [t.kind for t in result.transitions]
        self.transitions += out
        return out


def test_evidence_needs_the_buffer_beyond_the_accuracy() -> None:
    assert evidence(45, 20) == "outside"
    assert evidence(35, 20) == "unknown"
    assert evidence(-45, 20) == "inside"
    assert evidence(-35, 20) == "unknown"


def test_boundary_jitter_never_raises_anything() -> None:
    walk = Walk(circle())
    for n in range(200):
        walk.fixes(at(150 + (25 if n % 2 else -25), acc=15))
    assert walk.transitions == []


def test_two_consecutive_fixes_outside_make_one_exit() -> None:
    walk = Walk(circle())
    assert walk.fixes(at(300)) == []
    assert walk.fixes(at(320)) == ["zone_exit"]
    assert walk.fixes(at(340), at(400)) == []  # still out: no second page


def test_a_2_km_jump_claiming_5_m_does_not_confirm() -> None:
    walk = Walk(circle())
    assert walk.fixes(at(2000, acc=5), at(10), at(2000, acc=5), at(0)) == []


def test_a_cell_fix_far_outside_does_not_count() -> None:
    walk = Walk(circle())
    assert (
        walk.fixes(at(2500, acc=1500, low=True), at(2500, acc=1500, low=True), at(3000, acc=150))
        == []
    )


def test_an_sos_outside_confirms_at_once() -> None:
    walk = Walk(circle())
    assert walk.fixes(at(400, alarm="sos")) == ["zone_exit"]


def test_return_home_after_an_exit_is_reported() -> None:
    walk = Walk(circle())
    walk.fixes(at(400), at(400))
    assert walk.fixes(at(10), at(5)) == ["zone_enter"]


def test_danger_zone_entry() -> None:
    river = project_geometry(
        {
            "type": "Polygon",
            "coordinates": [
                [
                    [120.69, 30.515],
                    [120.70, 30.515],
                    [120.70, 30.52],
                    [120.69, 30.52],
                    [120.69, 30.515],
                ]
            ],
        },
        FRAME,
        None,
    )
    walk = Walk(circle(radius=3000), Zone("river", "danger", river))
    inside_lat, inside_lon = 30.5175, 120.695
    fix = FixInput(lat=inside_lat, lon=inside_lon, accuracy_m=10, low_quality=False, alarm=None)
    assert walk.fixes(fix) == []
    assert walk.fixes(fix) == ["danger_enter"]


def fresh_circle() -> Zone:
    zone = circle()
    return Zone(zone.id, zone.kind, zone.shape, zone.schedule, created=NOON.timestamp() - 60)


def test_a_newly_drawn_zone_learns_silently() -> None:
    walk = Walk(fresh_circle(), settled_inside=False)
    assert walk.fixes(at(500), at(500)) == []  # drawn while out with the family
    assert walk.fixes(at(0), at(0)) == []  # home: nothing was announced, nothing to undo
    assert walk.fixes(at(500), at(500)) == ["zone_exit"]


def test_a_zone_that_never_proved_inside_still_reports_the_exit_after_its_grace() -> None:
    # A 150 m circle with indoor Wi-Fi fixes of 140 m accuracy never proves "inside".
    walk = Walk(circle(), settled_inside=False)
    assert walk.fixes(*(at(0, acc=95) for _ in range(10))) == []
    assert walk.fixes(at(400), at(450)) == ["zone_exit"]


def test_coming_back_on_speaks_only_on_a_fix_that_counts() -> None:
    walk = Walk(circle())
    walk.fixes(at(600), at(600), paused=True)  # driven out by the family
    walk.fixes(at(0, acc=150), paused=True)  # brought home; a vague fix does not count
    assert walk.fixes(at(0, acc=150)) == []  # pause over: a vague fix says nothing
    assert walk.fixes(at(0), at(0)) == []  # she is home: no exit, no enter (never announced)


def test_return_home_after_a_reported_exit_and_a_pause_is_announced() -> None:
    walk = Walk(circle())
    assert walk.fixes(at(600), at(600)) == ["zone_exit"]
    walk.fixes(at(0), at(0), paused=True)  # "he is with me" while bringing her back
    assert walk.fixes(at(0)) == ["zone_enter"]


NIGHT = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "20:00", "end": "07:00"}]


def test_schedule_windows_cross_midnight() -> None:
    monday_23 = datetime(2026, 11, 23, 23, 0, tzinfo=SHANGHAI)
    assert is_active(NIGHT, monday_23)
    assert is_active(NIGHT, datetime(2026, 11, 24, 6, 59, tzinfo=SHANGHAI))
    assert not is_active(NIGHT, datetime(2026, 11, 24, 7, 0, tzinfo=SHANGHAI))
    weekdays_only = [{"days": [1, 2, 3, 4, 5], "start": "22:00", "end": "02:00"}]
    saturday_1am = datetime(2026, 11, 28, 1, 0, tzinfo=SHANGHAI)  # Friday's window runs into it
    assert is_active(weekdays_only, saturday_1am)
    assert not is_active(weekdays_only, datetime(2026, 11, 29, 1, 0, tzinfo=SHANGHAI))


def test_a_night_zone_switching_on_at_midnight_raises_no_false_exit() -> None:
    midnight_only = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "06:00"}]
    walk = Walk(circle(schedule=midnight_only), settled_inside=False)
    evening = datetime(2026, 11, 23, 23, 58, tzinfo=SHANGHAI)
    after = datetime(2026, 11, 24, 0, 1, tzinfo=SHANGHAI)
    assert walk.fixes(at(0), at(0), when=evening) == []  # home, zone off
    assert walk.fixes(at(0), at(0), when=after) == []  # zone on: she is home, nothing to say
    assert walk.fixes(at(400), at(400), when=after) == ["zone_exit"]


def test_a_zone_switching_on_while_she_is_out_reports_on_the_next_fix() -> None:
    walk = Walk(circle(schedule=NIGHT))
    walk.fixes(at(0), at(0), when=datetime(2026, 11, 23, 21, 0, tzinfo=SHANGHAI))
    walk.fixes(at(600), at(600), when=datetime(2026, 11, 24, 8, 0, tzinfo=SHANGHAI))  # day: off
    assert walk.fixes(at(600), when=datetime(2026, 11, 24, 20, 1, tzinfo=SHANGHAI)) == ["zone_exit"]


def test_a_paused_elder_raises_nothing_until_the_pause_ends() -> None:
    walk = Walk(circle())
    assert walk.fixes(at(600), at(600), at(700), paused=True) == []
    assert walk.fixes(at(700)) == ["zone_exit"]  # pause over, still out: now it counts


def test_polygon_signed_distance_is_metric() -> None:
    square = project_geometry(
        {
            "type": "Polygon",
            "coordinates": [
                [
                    [120.68, 30.51],
                    [120.69, 30.51],
                    [120.69, 30.52],
                    [120.68, 30.52],
                    [120.68, 30.51],
                ]
            ],
        },
        FRAME,
        None,
    )
    import numpy as np

    x, y = FRAME.xy(30.515, 120.695)  # east of the square by 0.005 deg of longitude
    [d] = square.signed_distance(np.atleast_1d(x), np.atleast_1d(y))
    assert 470 < d < 490


def test_unsure_and_leaving_say_when_to_ask_the_bracelet() -> None:
    walk = Walk(circle(radius=150))

    def judge(fix: FixInput) -> tuple[bool, bool]:
        result = evaluate(walk.zones, walk.states, FRAME, fix, local_time=NOON, paused=False)
        return result.unsure, result.leaving

    # A danger zone 5 km east: a fix at home proves her outside it.
    river = {"type": "Point", "coordinates": [HOME[1] + 0.05, HOME[0]]}
    walk.zones.append(Zone("river", "danger", project_geometry(river, FRAME, 60), None))
    assert judge(at(0)) == (False, False)  # proven inside home, proven outside the river
    assert judge(at(0, acc=1500, low=True)) == (True, False)  # a cell fix proves nothing
    assert judge(at(120, acc=30)) == (True, False)  # too close to the line for its accuracy
    assert judge(at(160, acc=30)) == (True, True)  # past the line: go fast
    walk.fixes(at(400), at(420))  # the exit is confirmed
    # Still worth asking: nothing proves her away from the river.
    assert judge(at(0, acc=1500, low=True)) == (True, False)
    walk.zones.pop()
    assert judge(at(0, acc=1500, low=True)) == (False, False)  # nothing left to ask about
    walk.fixes(at(0), at(0))
    assert (
        evaluate(
            walk.zones, walk.states, FRAME, at(140, acc=30), local_time=NOON, paused=True
        ).unsure
        is False
    )  # paused: no active zone, nothing to ask
