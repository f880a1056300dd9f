"""The recalculation pass under failure: crashed workers, overlapping runs, racing edits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from herald import clock
from herald.segments import recalculation
from herald.store.tables import MembershipRecord, RunPartRecord
from tests.harness import Herald

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULE = {"field": "attributes.score", "op": "greater_or_equal", "value": 50}


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


def seed(h: Herald, scores: dict[str, int]) -> str:
    for cid, score in scores.items():
        body = {"contact_id": cid, "kind": "customer", "attributes": {"score": score}}
        assert h.call("POST", "/contacts", body).status == 201
    reply = h.call("POST", "/segments", {"name": "High", "rule": RULE, "flexi": True})
    h.drain("SegmentWorkerFunction")
    return str(reply.body["id"])


def rescore(h: Herald, scores: dict[str, int]) -> None:
    for cid, score in scores.items():
        assert h.call("PATCH", f"/contacts/{cid}", {"attributes": {"score": score}}).status == 200


def state(h: Herald, segment_id: str) -> tuple[set[str], int, dict[str, list[str]]]:
    items = {m.contact_id for m in MembershipRecord.query(f"seg#{segment_id}", consistent_read=True)}
    count = h.call("GET", f"/segments/{segment_id}").body["member_count"]
    sets = {cid: h.call("GET", f"/contacts/{cid}").body["segment_ids"] for cid in ("c0", "c1", "c2", "c3", "c4", "c5")}
    return items, count, sets


def expected_for(scores: dict[str, int], segment_id: str) -> tuple[set[str], int, dict[str, list[str]]]:
    high = {cid for cid, s in scores.items() if s >= 50}
    return high, len(high), {cid: [segment_id] if cid in high else [] for cid in scores}


SCORES = {f"c{n}": 10 * n for n in range(6)}  # c5 (50) qualifies
LATER = {f"c{n}": 100 - 10 * n for n in range(6)}  # c0..c5 → 100..50: all qualify


def test_a_worker_that_crashes_mid_part_is_retried_without_lost_or_duplicate_members(
    herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_id = seed(herald, SCORES)
    rescore(herald, {"c0": 60, "c5": 0, "c3": 70})
    monkeypatch.setattr(recalculation, "PAGE_SIZE", 2)
    real_save = RunPartRecord.save
    crashes = {"left": 1}

    def crash_after_writing(self: RunPartRecord, *args: Any, **kwargs: Any) -> Any:
        if crashes["left"] and self.scanned:  # the page's changes are written, the checkpoint is not
            crashes["left"] -= 1
            raise RuntimeError("worker crashed")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(RunPartRecord, "save", crash_after_writing)
    herald.call("POST", "/recalculations", {})
    herald.drain("SegmentWorkerFunction")
    assert crashes["left"] == 0
    # The failed message comes back after its visibility timeout; deliver it now.
    sqs = boto3.client("sqs")
    url = herald.queue_url("RecalculationQueue")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == 1
    for message in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, MaxNumberOfMessages=10).get("Messages", []):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    herald.drain("SegmentWorkerFunction")
    final = {**SCORES, "c0": 60, "c5": 0, "c3": 70}
    assert state(herald, segment_id) == expected_for(final, segment_id)


def test_two_overlapping_runs_cannot_corrupt_membership(herald: Herald) -> None:
    segment_id = seed(herald, SCORES)
    rescore(herald, LATER)
    runs = [recalculation.start_run(f"overlap {n}", lambda bodies: None, parts=2) for n in range(2)]
    errors: list[BaseException] = []

    def work(run_id: str, part: int) -> None:
        try:
            recalculation.process_part(run_id, part)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(run.entity_id, part)) for run in runs for part in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert state(herald, segment_id) == expected_for(LATER, segment_id)
    assert all(recalculation.run_status(run.entity_id)["state"] == "Done" for run in runs)
    # Between them the two runs applied each change exactly once.
    assert sum(recalculation.run_status(run.entity_id)["changes"] for run in runs) == 5


def test_a_contact_edited_while_its_page_is_evaluated_is_re_read(
    herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_id = seed(herald, SCORES)
    real = recalculation.apply_changes
    edited = {"done": False}

    def edit_first(changes: Any, targets: Any, now: str) -> Any:
        if not edited["done"]:
            edited["done"] = True
            rescore(herald, {"c5": 0})  # c5 leaves after the page was read: its exit is written from a fresh read
        return real(changes, targets, now)

    monkeypatch.setattr(recalculation, "apply_changes", edit_first)
    rescore(herald, {"c1": 90})
    herald.call("POST", "/recalculations", {})
    herald.drain("SegmentWorkerFunction")
    final = {**SCORES, "c1": 90, "c5": 0}
    assert state(herald, segment_id) == expected_for(final, segment_id)


def test_a_retried_chunk_resends_each_update_once(herald: Herald) -> None:
    # A packed request fails on one unit, and the rest are retried one by one: the
    # retried contact update must carry its version increment once, not twice.
    from herald.segments.model import GroupType
    from herald.store import segments as store
    from herald.store.transactions import commit_units

    segment_id = seed(herald, {"c1": 10, "c2": 10})
    current = herald.call("GET", "/contacts/c1").body["version"]
    good = store.MembershipChange(
        "c1", current, "customer", "Active", segment_ids={segment_id}, entered=[(GroupType.SEGMENT, segment_id)]
    )
    stale = store.MembershipChange(
        "c2", 99, "customer", "Active", segment_ids={segment_id}, entered=[(GroupType.SEGMENT, segment_id)]
    )
    report = commit_units([store.change_unit(0, good, NOW.isoformat()), store.change_unit(1, stale, NOW.isoformat())])
    assert list(report.failures) == [1]
    assert herald.call("GET", "/contacts/c1").body["segment_ids"] == [segment_id]
    assert herald.call("GET", "/contacts/c1").body["version"] == current + 1
    assert herald.call("GET", f"/segments/{segment_id}").body["member_count"] == 1
    assert herald.call("GET", "/recalculations/no-such-run").status == 404


def test_the_planner_runs_on_its_schedule_in_the_configured_time_zone(herald: Herald) -> None:
    seed(herald, SCORES)
    [schedule] = [
        e
        for f in herald.template.functions()
        if f.logical_id == "SegmentPlannerFunction"
        for e in f.events
        if e.type == "ScheduleV2"
    ]
    assert schedule.properties["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule.properties["ScheduleExpressionTimezone"] == "UTC"
    result = herald.host.invoke("SegmentPlannerFunction", {"source": "aws.scheduler", "detail-type": "Scheduled Event"})
    status = recalculation.run_status(result["run_id"])
    assert status["reason"] == "nightly" and len(status["targets"]) == 1 and status["parts"] == 8
    herald.drain("SegmentWorkerFunction")
    assert recalculation.run_status(result["run_id"])["state"] == "Done"


def test_a_malformed_part_message_is_logged_counted_and_dropped(
    herald: Herald, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    sqs = boto3.client("sqs")
    url = herald.queue_url("RecalculationQueue")
    sqs.send_message(QueueUrl=url, MessageBody='{"run_id": "", "part": -1}')
    herald.drain("SegmentWorkerFunction")
    captured = capfd.readouterr()
    output = captured.out + captured.err
    logged = [r.getMessage() for r in caplog.records] + [output]
    assert any("malformed recalculation message dropped" in line for line in logged)
    assert '"RecalculationMessageRejected":[1.0]' in output
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)


def test_unpublishable_membership_events_end_in_the_dead_letter_queue(
    herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herald.segments.events import EventPublisher

    def refuse(self: EventPublisher, events: list[dict[str, Any]]) -> None:
        raise RuntimeError("EventBridge is down")

    monkeypatch.setattr(EventPublisher, "publish", refuse)
    seed(herald, SCORES)  # c5 enters the segment: one INSERT record
    herald.pump_streams()
    sqs = boto3.client("sqs")
    dlq = herald.queue_url("MembershipEventsDeadLetterQueue")
    [message] = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert "MembershipEventsFunction" in message["Body"]
