"""The campaign tick: seed 000's targeting table, eligibility, exactly-once enrolment, exits, re-engagement."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald import clock
from herald.campaigns.tick import Tick
from herald.store import enrolments
from tests.harness import Herald

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


class Queue:
    """Captures what a tick queues for delivery."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]]) -> None:
        with self.lock:
            self.messages += messages

    def sends(self) -> list[tuple[str, str, str]]:
        return sorted((m["contact_id"], s["campaign_id"], s["occurrence"]) for m in self.messages for s in m["sends"])


def customer(h: Herald, cid: str, status: str = "Active", groups: list[str] | None = None, **extra: Any) -> None:
    body = {
        "contact_id": cid,
        "kind": "customer",
        "status": status,
        "email": f"{cid}@example.com",
        "group_ids": groups or [],
        "consent": {"email": {"granted": True, "source": "signup"}},
        **extra,
    }
    reply = h.call("POST", "/contacts", body)
    assert reply.status == 201, reply.body


def group(h: Herald, gid: str) -> None:
    assert h.call("POST", "/groups", {"group_id": gid, "name": gid.upper()}).status == 201


def campaign(h: Herald, cid: str, targeting: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body = {
        "id": cid,
        "name": f"Campaign {cid}",
        "description": "Tell customers about the winter sale",
        "targeting": targeting or {},
        "published": True,
        "actions": [{"type": "email", "subject": "Hi {{ contact.first_name | default('there') }}", "body": "Sale!"}],
        **fields,
    }
    reply = h.call("POST", "/campaigns", body)
    assert reply.status == 201, reply.body
    return reply.body


def launch(h: Herald, cid: str) -> None:
    reply = h.call("POST", f"/campaigns/{cid}/launch", {"force": True, "reason": "test"})
    assert reply.status == 200, reply.body


def tick(queue: Queue | None = None, now: datetime = NOW, **kwargs: Any) -> Any:
    return Tick(now, queue or Queue(), **kwargs).run()


def enrolled(campaign_id: str) -> dict[str, str]:
    from herald.store.tables import EnrolmentRecord

    return {r.contact_id: r.state for r in EnrolmentRecord.query(enrolments.program_key(campaign_id))}


@pytest.fixture
def population(herald: Herald) -> Herald:
    """Two groups; customers of each status in and out of them; a lead."""
    group(herald, "vip")
    group(herald, "retail")
    customer(herald, "a1", "Active", ["vip"])
    customer(herald, "a2", "Active", ["retail"])
    customer(herald, "a3", "Active")
    customer(herald, "i1", "Inactive", ["vip"])
    customer(herald, "i2", "Inactive")
    lead = {"contact_id": "l1", "kind": "lead", "email": "l1@example.com"}
    assert herald.call("POST", "/contacts", lead).status == 201
    return herald


@pytest.mark.parametrize(
    ("targeting", "expected"),
    [
        ({}, {"a1", "a2", "a3", "i1", "i2"}),  # blank group, All, All: every customer (never the lead)
        ({"group_id": "vip"}, {"a1", "i1"}),  # a group, All, All: every customer in it
        ({"status": "Active"}, {"a1", "a2", "a3"}),  # blank group, Active
        ({"status": "Inactive"}, {"i1", "i2"}),  # blank group, Inactive
        ({"group_id": "vip", "status": "Active"}, {"a1"}),  # a group, Active
        ({"group_id": "vip", "status": "Inactive"}, {"i1"}),  # a group, Inactive
        ({"group_id": "retail", "send_to": "All", "status": "All"}, {"a2"}),
    ],
)
def test_the_targeting_table_of_seed_000(population: Herald, targeting: dict[str, Any], expected: set[str]) -> None:
    campaign(population, "c", targeting)
    launch(population, "c")
    queue = Queue()
    report = tick(queue)
    assert set(enrolled("c")) == expected
    assert {m["contact_id"] for m in queue.messages} == expected
    assert report.campaigns["c"].matching == len(expected)


def test_a_second_tick_enrols_and_sends_nothing_new(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")
    first, second = Queue(), Queue()
    tick(first)
    report = tick(second)
    assert len(first.sends()) == 3
    assert second.messages == []
    assert report.campaigns["c"].enrolled == 0
    assert report.campaigns["c"].in_campaign_pct == 100.0


def test_group_changes_apply_to_the_next_tick_and_leavers_exit(population: Herald) -> None:
    campaign(population, "c", {"group_id": "vip"})
    launch(population, "c")
    tick()
    assert enrolled("c") == {"a1": "active", "i1": "active"}
    assert population.call("DELETE", "/contacts/i1/groups/vip").status in (200, 204)
    assert population.call("PUT", "/contacts/a2/groups/vip").status in (200, 201, 204)
    queue = Queue()
    report = tick(queue)
    assert enrolled("c") == {"a1": "active", "i1": "exited", "a2": "active"}
    assert queue.sends() == [("a2", "c", "1")]
    assert report.campaigns["c"].exited == 1


def test_eligibility_each_condition_blocks_the_tick(population: Herald) -> None:
    campaign(population, "unpublished", {"status": "Active"}, published=False)
    launch(population, "unpublished")
    campaign(population, "draft", {"status": "Active"})
    campaign(population, "future", {"status": "Active"}, start="2026-11-24T00:00", time_zone="Europe/Prague")
    launch(population, "future")
    campaign(population, "ended", {"status": "Active"}, end="2026-11-23T12:00", time_zone="UTC")
    launch(population, "ended")
    campaign(population, "stopped", {"status": "Active"})
    launch(population, "stopped")
    assert population.call("POST", "/campaigns/stopped/stop").status == 200
    campaign(
        population,
        "running",
        {"status": "Active"},
        start="2026-11-23T13:00",
        end="2026-11-23T13:01",
        time_zone="Europe/Prague",
    )  # 12:00Z is 13:00 in Prague: start <= now < end
    launch(population, "running")
    report = tick()
    assert "not published" in report.campaigns["unpublished"].skipped
    assert "draft" not in report.campaigns  # never launched: not on the live index
    assert "starts at" in report.campaigns["future"].skipped
    assert "ended at" in report.campaigns["ended"].skipped
    assert "stopped" not in report.campaigns  # stopping takes it off the live index
    assert report.campaigns["running"].processed and report.campaigns["running"].enrolled == 3
    for name in ("unpublished", "draft", "future", "ended", "stopped"):
        assert enrolled(name) == {}, name
    # Resume puts a stopped campaign back; it runs continuously until stopped.
    assert population.call("POST", "/campaigns/stopped/resume").status == 200
    assert tick().campaigns["stopped"].enrolled == 3


def test_two_concurrent_ticks_enrol_and_queue_each_contact_once(herald: Herald) -> None:
    for i in range(150):
        customer(herald, f"c{i:03d}")
    campaign(herald, "c", {"status": "Active"})
    launch(herald, "c")
    queue = Queue()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            tick(queue, use_lease=False)  # no lease: only the enrolment conditions stand between them
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sends = queue.sends()
    assert len(sends) == 150 and len(set(sends)) == 150
    assert len(enrolled("c")) == 150
    stats = herald.call("GET", "/campaigns/c/stats").body
    assert stats["enrolled"] == 150


def test_a_held_lease_makes_an_overlapping_tick_skip(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")
    assert enrolments.take_lease("tick#c", "someone-else", 60)
    assert tick().campaigns["c"].skipped == "another tick holds this campaign"
    assert enrolled("c") == {}


def test_a_crash_before_queueing_is_recovered_by_the_next_tick(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")

    def crash(messages: list[dict[str, Any]]) -> None:
        raise RuntimeError("queue unavailable")

    with pytest.raises(RuntimeError):
        Tick(NOW, crash).run()
    assert len(enrolled("c")) == 3  # enrolled, with their deliveries held in the outbox
    assert tick(Queue()).requeued_outbox == 0  # too young: it could be a tick still running
    queue = Queue()
    report = tick(queue, now=NOW + timedelta(minutes=16))  # past the crashed tick's timeout
    assert report.requeued_outbox == 1
    assert queue.sends() == [("a1", "c", "1"), ("a2", "c", "1"), ("a3", "c", "1")]
    assert enrolments.pending_outbox() == []
    assert tick(Queue(), now=NOW + timedelta(minutes=21)).queued_sends == 0


def test_a_stale_roster_is_repaired_without_double_enrolment(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")
    tick()
    from herald.store.tables import RosterRecord

    for bucket in RosterRecord.query(enrolments.roster_key("campaign#c")):
        bucket.delete()  # as if the run had crashed before writing its roster
    queue = Queue()
    report = tick(queue)
    assert queue.messages == []
    assert report.campaigns["c"].already == 3
    assert enrolments.read_roster("campaign#c") == {"a1", "a2", "a3"}


def test_previously_treated_contacts_need_the_re_engagement_setting(population: Herald) -> None:
    campaign(population, "first", {"status": "Active"})
    launch(population, "first")
    tick()
    # a1 stops matching (turns Inactive) and exits: it is now "previously treated".
    assert population.call("PATCH", "/contacts/a1", {"status": "Inactive"}).status == 200
    tick()
    assert enrolled("first")["a1"] == "exited"
    campaign(population, "plain", {"status": "Inactive"})
    launch(population, "plain")
    campaign(population, "reengage", {"status": "Inactive"}, include_previously_treated=True)
    launch(population, "reengage")
    report = tick()
    assert set(enrolled("plain")) == {"i1", "i2"}
    assert report.campaigns["plain"].not_previously_treated == 1
    assert set(enrolled("reengage")) == {"a1", "i1", "i2"}
    # a1 comes back to Active: the first campaign re-enrols it only with the setting on.
    assert population.call("PATCH", "/contacts/a1", {"status": "Active"}).status == 200
    tick()
    assert enrolled("first")["a1"] == "exited"
    assert population.call("PATCH", "/campaigns/first", {"include_previously_treated": True}).status == 200
    queue = Queue()
    tick(queue)
    assert enrolled("first")["a1"] == "active"
    assert [s[2][0] for s in queue.sends() if s[1] == "first"] == ["r"]  # a new occurrence


def test_segment_audience_badge_and_lead_form_targeting(herald: Herald) -> None:
    customer(herald, "c1", attributes={"city": "Prague"})
    customer(herald, "c2", attributes={"city": "Brno"})
    rule = {"all": [{"field": "attributes.city", "op": "equals", "value": "Prague"}]}
    assert herald.call("POST", "/segments", {"id": "prague", "name": "Prague", "rule": rule}).status == 201
    herald.drain("SegmentWorkerFunction")
    campaign(herald, "seg", {"segment_ids": ["prague"]})
    launch(herald, "seg")
    tick()
    assert set(enrolled("seg")) == {"c1"}
    leads = herald.call(
        "POST",
        "/campaigns",
        {
            "id": "leads",
            "name": "Leads",
            "description": "lead nurture",
            "audience_type": "leads",
            "targeting": {"segment_ids": ["prague"]},
        },
    )
    assert leads.status == 201, leads.body
    bad = herald.call(
        "POST",
        "/campaigns",
        {"name": "x", "description": "y", "audience_type": "leads", "targeting": {"status": "Active"}},
    )
    assert bad.status == 422 and bad.body["errors"][0]["field"] == "targeting"
    mixed = herald.call(
        "POST",
        "/campaigns",
        {"name": "x", "description": "y", "targeting": {"group_id": "g", "segment_ids": ["prague"]}},
    )
    assert mixed.status == 422 and mixed.body["errors"][0]["field"].startswith("targeting")
    unknown = herald.call(
        "POST", "/campaigns", {"name": "x", "description": "y", "targeting": {"segment_ids": ["nope"]}}
    )
    assert unknown.status == 422 and unknown.body["errors"][0]["field"] == "targeting.segment_ids"


def test_birthday_trigger_fires_once_a_year_in_the_contacts_time_zone(herald: Herald) -> None:
    customer(herald, "tokyo", time_zone="Asia/Tokyo", attributes={"birthday": "1990-11-24"})
    customer(herald, "ny", time_zone="America/New_York", attributes={"birthday": "1985-11-23"})
    customer(herald, "other", attributes={"birthday": "1985-06-01"})
    campaign(herald, "bday", {}, kind="trigger", trigger={"date": "birthday", "send_at": "09:00"})
    launch(herald, "bday")
    # 2026-11-23 12:00Z: 21:00 on the 23rd in Tokyo (not its day), 07:00 on the 23rd in New York (before 09:00).
    queue = Queue()
    tick(queue)
    assert queue.messages == []
    later = NOW + timedelta(hours=3)  # 10:00 in New York on its birthday; 00:00 on the 24th in Tokyo
    tick(queue, now=later)
    assert queue.sends() == [("ny", "bday", "birthday#2026")]
    tokyo_morning = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # 09:30 on the 24th in Tokyo
    tick(queue, now=tokyo_morning)
    tick(queue, now=tokyo_morning + timedelta(minutes=5))
    assert queue.sends() == [("ny", "bday", "birthday#2026"), ("tokyo", "bday", "birthday#2026")]


def test_a_failing_campaign_does_not_stop_the_others_and_the_run_reports_it(population: Herald) -> None:
    from herald.campaigns.tick import TickFailed
    from herald.store.tables import CampaignRecord

    campaign(population, "good", {"status": "Active"})
    launch(population, "good")
    campaign(population, "broken", {"status": "Active"}, priority=1)  # runs first
    launch(population, "broken")
    record = CampaignRecord.get("campaign", "broken")
    record.spec = {**record.spec, "targeting": {"status": "Sleeping"}}  # a spec that no longer validates
    record.save()
    queue = Queue()
    with pytest.raises(TickFailed) as failure:
        tick(queue)
    assert failure.value.campaign_ids == ["broken"]
    assert failure.value.report.campaigns["good"].enrolled == 3
    assert {m["contact_id"] for m in queue.messages} == {"a1", "a2", "a3"}  # queued before the failure is raised


def test_a_tick_running_out_of_time_leaves_the_rest_for_the_next(population: Herald) -> None:
    campaign(population, "first", {"status": "Active"}, priority=1)
    launch(population, "first")
    campaign(population, "second", {"status": "Active"}, priority=2)
    launch(population, "second")
    calls = iter([True, False])
    report = Tick(NOW, Queue(), has_time=lambda: next(calls)).run()
    assert report.campaigns["first"].enrolled == 3
    assert report.campaigns["second"].skipped == "out of time"
    assert tick().campaigns["second"].enrolled == 3


def test_a_crash_between_an_exit_and_its_roster_write_is_repaired(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")
    tick()
    assert population.call("PATCH", "/contacts/a1", {"status": "Inactive"}).status == 200
    # The crash: a1's enrolment exited and the exited/treated rosters learned it, the active one not.
    enrolments.exit_contacts("c", ["a1"], "no longer matches targeting", "2026-11-23T12:00:00.000Z")
    changes = enrolments.RosterChanges()
    changes.add(["a1"])
    enrolments.flush_roster("campaign#c#exited", changes)
    assert "a1" in enrolments.read_roster("campaign#c")
    report = tick()
    assert "a1" not in enrolments.read_roster("campaign#c")
    assert report.campaigns["c"].active == 2 and report.campaigns["c"].in_campaign_pct == 100.0
    assert population.call("PATCH", "/contacts/a1", {"status": "Active"}).status == 200
    assert tick().campaigns["c"].not_previously_treated == 1  # not re-enrolled without the setting


def test_a_birthday_missed_on_its_day_fires_the_day_after_once(herald: Herald) -> None:
    customer(herald, "late", attributes={"birthday": "1990-11-22"})
    campaign(herald, "bday", {}, kind="trigger", trigger={"date": "birthday", "send_at": "23:58"})
    launch(herald, "bday")
    queue = Queue()
    tick(queue)  # 23 Nov 12:00 UTC: the 22nd's 23:58 was never reached by a tick
    tick(queue, now=NOW + timedelta(hours=1))
    assert queue.sends() == [("late", "bday", "birthday#2026")]


def test_a_reused_id_of_a_deleted_campaign_is_refused(population: Herald) -> None:
    campaign(population, "c", {"status": "Active"})
    launch(population, "c")
    tick()
    assert population.call("POST", "/campaigns/c/stop").status == 200
    assert population.call("DELETE", "/campaigns/c").status == 204
    body = {"id": "c", "name": "Again", "description": "a new campaign under an old id"}
    reply = population.call("POST", "/campaigns", body)
    assert reply.status == 409 and "was used" in reply.body["message"]
