"""The incident state machine and dispatch ladder, pure (no Redis, no broker)."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest

from alerts import escalation as esc
from alerts.escalation import Candidate, InvalidTransition, Policy, View

POLICY = Policy()


def view(status: str = "open", **states: str) -> View:
    responders: dict[int, dict[str, Any]] = {int(k[1:]): {"state": v} for k, v in states.items()}
    return View(status=status, responders=responders)


def recipients(change: esc.Change) -> dict[str, str]:
    return {n.recipient: n.template for n in change.notices}


def test_the_ladder_runs_voice_respond_onsite_in_order_and_skips_what_no_longer_applies() -> None:
    assert esc.next_step(POLICY, status="open", after="t0") == ("voice", 90)
    assert esc.next_step(POLICY, status="open", after="voice") == ("respond", 180)
    assert esc.next_step(POLICY, status="open", after="respond") == ("onsite", 600)
    assert esc.next_step(POLICY, status="open", after="onsite") is None
    # Accepted before the voice step: straight to the on-site deadline.
    assert esc.next_step(POLICY, status="acknowledged", after="t0") == ("onsite", 600)
    assert esc.next_step(POLICY, status="on_site", after="t0") is None
    custom = Policy(respond_s=60, onsite_s=120, voice_after_s=30)
    assert esc.next_step(custom, status="open", after=None) == ("voice", 30)
    assert Policy.from_json(custom.to_json()) == custom


def test_quiet_hours_across_midnight_and_nearest_selection() -> None:
    night = {"start": "22:00", "end": "07:00"}
    assert esc.in_quiet_hours(night, time(23, 30))
    assert esc.in_quiet_hours(night, time(6, 59))
    assert not esc.in_quiet_hours(night, time(7, 0))
    assert not esc.in_quiet_hours(None, time(3, 0))
    assert esc.in_quiet_hours({"start": "13:00", "end": "14:00"}, time(13, 0))
    people = [
        Candidate(1, 50, on_duty=False),
        Candidate(2, 120, on_duty=True, quiet_hours=night),
        Candidate(3, 300, on_duty=True),
        Candidate(4, 200, on_duty=True),
        Candidate(5, 900, on_duty=True),
        Candidate(6, 1200, on_duty=True),
        Candidate(7, 100, on_duty=True),
    ]
    picked = esc.pick_nearest(people, exclude={7}, count=3, local=time(23, 0), radius_m=1000)
    assert picked == [4, 3, 5]  # 1 off duty, 2 asleep, 7 already paged, 6 beyond 1 km
    assert esc.pick_nearest(people, exclude=set(), count=10, local=time(12, 0), radius_m=250) == [
        7,
        2,
        4,
    ]


def test_first_accept_acknowledges_and_stands_only_the_waiting_down() -> None:
    v = view(v1="notified", v2="notified", v3="declined", v4="notified")
    change = esc.accept(v, vid=1, now=100.0)
    assert change.status == "acknowledged"
    assert change.fields == {"acknowledged_at": 100.0, "acknowledged_by": 1}
    assert change.responders[1]["state"] == "accepted"
    assert {k: r["state"] for k, r in change.responders.items() if k != 1} == {
        2: "stood_down",
        4: "stood_down",
    }
    assert recipients(change) == {
        "volunteer:2": "covered",
        "volunteer:4": "covered",
        "guardians": "accepted",
    }
    assert change.ladder == "next"
    # A second accept joins in without re-acknowledging or standing anyone down.
    later = esc.accept(view("acknowledged", v1="accepted", v2="stood_down"), vid=2, now=150.0)
    assert later.status is None and later.fields == {}
    assert later.responders == {2: {"state": "accepted", "accepted_at": 150.0}}
    # Accepting twice is not news.
    assert esc.accept(view("acknowledged", v1="accepted"), vid=1, now=200.0).responders == {}


def test_decline_asks_for_one_more_and_withdraw_reopens_when_nobody_is_left() -> None:
    change = esc.decline(view(v1="notified"), vid=1)
    assert change.more_nearby == 1 and change.responders[1]["state"] == "declined"
    assert esc.decline(view("acknowledged", v1="notified", v2="accepted"), vid=1).more_nearby == 0
    with pytest.raises(InvalidTransition, match="withdraw instead"):
        esc.decline(view("acknowledged", v1="accepted"), vid=1)
    alone = esc.withdraw(view("acknowledged", v1="accepted", v2="stood_down"), vid=1)
    assert alone.status == "open" and alone.more_nearby == 1 and alone.ladder == "next"
    covered = esc.withdraw(view("acknowledged", v1="accepted", v2="accepted"), vid=1)
    assert covered.status is None and covered.more_nearby == 0
    with pytest.raises(InvalidTransition, match="has not accepted"):
        esc.withdraw(view(v1="notified"), vid=1)
    with pytest.raises(InvalidTransition, match="was not alerted"):
        esc.accept(view(v1="notified"), vid=9, now=0.0)


def test_arrive_by_press_or_location_and_closing() -> None:
    pressed = esc.arrive(view("acknowledged", v1="accepted"), vid=1, now=300.0, how="pressed")
    assert pressed.status == "on_site" and pressed.fields["on_site_at"] == 300.0
    assert pressed.ladder == "stop"
    # Pressing arrived without accepting is an accept too (the respond SLA counts it).
    direct = esc.arrive(view(v1="notified", v2="notified"), vid=1, now=50.0, how="pressed")
    assert direct.status == "on_site" and direct.fields["acknowledged_at"] == 50.0
    # A location alone never places someone who did not accept.
    assert esc.arrive(view(v1="notified"), vid=1, now=50.0, how="location").status is None
    closed = esc.close(
        view("on_site", v1="arrived", v2="stood_down", v3="notified"),
        status="resolved",
        outcome="found_safe",
        now=900.0,
        actor="dispatcher",
    )
    assert closed.status == "resolved" and closed.fields["outcome"] == "found_safe"
    assert set(recipients(closed)) == {"volunteer:1", "volunteer:3", "guardians"}
    assert closed.ladder == "stop"
    for status in ("resolved", "cancelled"):
        for action in (
            lambda v: esc.accept(v, vid=1, now=0.0),
            lambda v: esc.decline(v, vid=1),
            lambda v: esc.close(v, status="resolved", outcome="other", now=0.0, actor="x"),
        ):
            with pytest.raises(InvalidTransition, match=status):
                action(view(status, v1="notified"))


def test_returned_home_stands_everyone_down_and_suggests_the_outcome() -> None:
    change = esc.returned_home(view("acknowledged", v1="accepted", v2="stood_down", v3="notified"))
    assert change.fields == {"suggested_outcome": "returned_home"}
    assert set(recipients(change)) == {"volunteer:1", "volunteer:3", "guardians"}
    assert change.ladder == "stop" and change.status is None
    assert esc.returned_home(view("resolved")).timeline == []


def test_a_step_records_its_breach_only_when_the_promise_was_broken() -> None:
    change = esc.run_step(view(), step="respond")
    assert change.fields == {"step": "respond", "respond_breached": True}
    assert change.timeline == [{"type": "step", "step": "respond", "breach": True}]
    assert esc.run_step(view(), step="voice").fields == {"step": "voice"}
    # Accepted at 60 s, withdrawn at 120 s: the respond step still runs, but the 3 minutes
    # were kept. Likewise someone who was on site and left.
    kept = View(status="open", responders={}, acknowledged_at=60.0)
    assert esc.run_step(kept, step="respond").fields == {"step": "respond"}
    assert esc.run_step(kept, step="onsite").fields == {"step": "onsite", "onsite_breached": True}
    there = View(status="acknowledged", responders={}, acknowledged_at=60.0, on_site_at=300.0)
    assert "breach" not in esc.run_step(there, step="onsite").timeline[0]
    # The ticker was behind and the first accept came after the deadline: the respond step
    # will never run now, so the accept records the breach itself (and the arrival its own).
    behind = View(
        status="open",
        responders={1: {"state": "notified"}},
        respond_deadline=180.0,
        onsite_deadline=600.0,
    )
    assert esc.accept(behind, vid=1, now=200.0).fields["respond_breached"] is True
    assert "respond_breached" not in esc.accept(behind, vid=1, now=170.0).fields
    late_arrival = esc.arrive(behind, vid=1, now=640.0, how="pressed")
    assert late_arrival.fields["onsite_breached"] is True
    # A dispatcher paging more people makes a returned-home incident live again.
    assert esc.dispatcher_pages(behind, more=1, team=False).fields["suggested_outcome"] == ""


def test_an_sms_stays_within_two_parts_with_a_long_name_place_and_url() -> None:
    from alerts.notify import messages

    link = "https://homeward.haining.example.cn/v/1234?t=12.6a0b1c2d.AbCdEfGhIjKlMnOpQrStUv"
    values = {
        "name": "欧阳春花（西山社区三号楼的那位老奶奶）",
        "minutes": 12,
        "place": "海宁市西山社区东北方向约 850 米，靠近人民医院和长途汽车站附近的十字路口",
        "code": "4821",
        "link": link,
    }
    text = messages.render("alert", "zh-CN", values)
    assert messages.sms_fits(text) and len(text) <= 134
    assert link in text and "4821" in text and "欧阳" in text  # never the link or the code
    short = messages.render("alert", "zh-CN", {**values, "name": "王芳", "place": "西山"})
    assert "王芳" in short and "西山" in short  # nothing cut when it fits
    english = messages.render("alert", "en", {**values, "name": "Wang Fang", "place": "850 m NE"})
    assert english.isascii() and "Wang Fang" in english  # GSM-7: 306 characters for two parts
    long_english = messages.render(
        "alert", "en", {**values, "name": "W" * 150, "place": "850 m north-east, " * 10}
    )
    assert long_english.isascii()  # shortened with "...", so it stays GSM-7
    # "[", "]" and "~" cost two septets each: the count is in septets, not characters.
    units, limit = messages.sms_length(long_english)
    assert limit == 306 and 250 < units <= 306 and units == len(long_english) + 3
    # A link that leaves no room at all: the text goes whole rather than mangled.
    huge = messages.render("alert", "zh-CN", {**values, "link": "https://x.cn/" + "a" * 200})
    assert "欧阳春花（西山社区三号楼的那位老奶奶）" in huge
