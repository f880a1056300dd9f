"""Flow timing and entry rules: delay ends, whole-second waits, time scale, re-entry, cohort windows, stream entry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from herald.flows import cohorts, entry, runner
from herald.flows.definition import DelayStep
from herald.store import flows as store
from herald.store.tables import FlowRunRecord
from local.functions import LocalFunction
from local.template import default_template

UTC_SETTINGS: dict[str, Any] = {"time_zone": "UTC"}
PRAGUE: dict[str, Any] = {"time_zone": "Europe/Prague"}
FRESH: dict[str, Any] = {"arrived_at": None}


def delay(**kind: Any) -> DelayStep:
    return DelayStep.model_validate({"id": "wait", "type": "delay", **kind})


def wait(step: DelayStep, arrived: datetime, settings: dict[str, Any] = UTC_SETTINGS) -> datetime:
    return runner._wait_until(step, FRESH, settings, arrived)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "unit", "expected"),
    [
        (45, "minutes", at(2026, 3, 10, 12, 45)),
        (5, "hours", at(2026, 3, 10, 17, 0)),
        (2, "days", at(2026, 3, 12, 12, 0)),
        (3, "weeks", at(2026, 3, 31, 12, 0)),
        (1, "months", at(2026, 4, 10, 12, 0)),
        (10, "months", at(2027, 1, 10, 12, 0)),  # across a year end
    ],
)
def test_a_duration_ends_that_long_after_the_cohort_arrived(amount: int, unit: str, expected: datetime) -> None:
    assert wait(delay(duration={"amount": amount, "unit": unit}), at(2026, 3, 10, 12, 0)) == expected


@pytest.mark.parametrize(
    ("arrived", "expected"),
    [
        (at(2026, 1, 31, 9, 30), at(2026, 2, 28, 9, 30)),
        (at(2028, 1, 31, 9, 30), at(2028, 2, 29, 9, 30)),  # a leap year
        (at(2100, 1, 31, 9, 30), at(2100, 2, 28, 9, 30)),  # a century is not a leap year
        (at(2026, 3, 31, 9, 30), at(2026, 4, 30, 9, 30)),
    ],
)
def test_a_month_from_a_long_months_end_is_the_short_months_last_day(arrived: datetime, expected: datetime) -> None:
    assert wait(delay(duration={"amount": 1, "unit": "months"}), arrived) == expected


def test_a_later_page_waits_from_when_the_cohort_arrived_not_from_now() -> None:
    step = delay(duration={"amount": 2, "unit": "days"})
    state = {"arrived_at": "2026-03-10T12:00:00.000Z"}
    assert runner._wait_until(step, state, UTC_SETTINGS, at(2026, 3, 10, 12, 7)) == at(2026, 3, 12, 12, 0)


# --------------------------------------------------------------------------
# Until a local time (and weekday), DST included
# --------------------------------------------------------------------------


def test_until_a_time_of_day_is_the_next_such_local_time() -> None:
    nine = delay(until={"time": "09:00"})
    # 07:30 UTC = 08:30 in Prague (CET, +1): today at 09:00 local.
    assert wait(nine, at(2026, 1, 14, 7, 30), PRAGUE) == at(2026, 1, 14, 8, 0)
    # 08:30 UTC = 09:30 local: tomorrow.
    assert wait(nine, at(2026, 1, 14, 8, 30), PRAGUE) == at(2026, 1, 15, 8, 0)
    # Exactly 09:00 local is not "after": tomorrow.
    assert wait(nine, at(2026, 1, 14, 8, 0), PRAGUE) == at(2026, 1, 15, 8, 0)
    # The same instant in UTC's time zone gives UTC's 09:00.
    assert wait(nine, at(2026, 1, 14, 7, 30)) == at(2026, 1, 14, 9, 0)


def test_until_a_time_of_day_across_the_spring_dst_change_keeps_local_time() -> None:
    # Prague moves from CET (+1) to CEST (+2) on Sunday 29 March 2026 at 02:00.
    nine = delay(until={"time": "09:00"})
    assert wait(nine, at(2026, 3, 28, 10, 0), PRAGUE) == at(2026, 3, 29, 7, 0)  # 09:00 CEST
    assert wait(nine, at(2026, 3, 27, 10, 0), PRAGUE) == at(2026, 3, 28, 8, 0)  # 09:00 CET


def test_until_a_time_of_day_across_the_autumn_dst_change_keeps_local_time() -> None:
    # Back from CEST to CET on Sunday 25 October 2026 at 03:00.
    nine = delay(until={"time": "09:00"})
    assert wait(nine, at(2026, 10, 24, 10, 0), PRAGUE) == at(2026, 10, 25, 8, 0)


def test_until_a_weekday_is_the_next_such_day_in_the_flows_time_zone() -> None:
    monday = delay(until={"time": "09:00", "weekday": "monday"})
    # Friday 27 March 2026 (CET) → Monday 30 March 09:00 CEST, across the DST change.
    assert wait(monday, at(2026, 3, 27, 10, 0), PRAGUE) == at(2026, 3, 30, 7, 0)
    # A Monday before 09:00 local → that same day.
    assert wait(monday, at(2026, 3, 30, 6, 0), PRAGUE) == at(2026, 3, 30, 7, 0)
    # A Monday after 09:00 local → a week later.
    assert wait(monday, at(2026, 3, 30, 8, 0), PRAGUE) == at(2026, 4, 6, 7, 0)
    # Sunday 23:30 UTC is already Monday 01:30 in Prague: that Monday's 09:00.
    assert wait(monday, at(2026, 4, 5, 23, 30), PRAGUE) == at(2026, 4, 6, 7, 0)


# --------------------------------------------------------------------------
# Whole seconds and the time scale
# --------------------------------------------------------------------------


def test_whole_second_rounds_up_and_keeps_whole_seconds() -> None:
    assert runner._whole_second(at(2026, 3, 10, 12, 0, 5)) == "2026-03-10T12:00:05Z"
    assert runner._whole_second(at(2026, 3, 10, 12, 0, 5) + timedelta(microseconds=1)) == "2026-03-10T12:00:06Z"
    assert runner._whole_second(at(2026, 3, 10, 23, 59, 59) + timedelta(microseconds=999_999)) == (
        "2026-03-11T00:00:00Z"
    )
    prague = datetime(2026, 3, 10, 13, 0, 0, 500, tzinfo=runner.ZoneInfo("Europe/Prague"))
    assert runner._whole_second(prague) == "2026-03-10T12:00:01Z"  # always in UTC


def test_the_time_scale_divides_every_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_FLOW_TIME_SCALE", "43200")  # a day in two seconds
    arrived = at(2026, 3, 10, 12, 0)
    assert wait(delay(duration={"amount": 2, "unit": "days"}), arrived) == arrived + timedelta(seconds=4)
    assert wait(delay(duration={"amount": 7, "unit": "days"}), arrived) == arrived + timedelta(seconds=14)
    # Until 12:00 the next day (24 h of real time) → two seconds.
    assert wait(delay(until={"time": "12:00"}), arrived) == arrived + timedelta(seconds=2)
    monkeypatch.setenv("HERALD_FLOW_TIME_SCALE", "0.5")  # never slower than real time
    assert wait(delay(duration={"amount": 1, "unit": "hours"}), arrived) == arrived + timedelta(hours=1)


# --------------------------------------------------------------------------
# Entering again after the reset period
# --------------------------------------------------------------------------

ENDED = at(2026, 3, 1, 12, 0)
OUTCOMES = (store.COMPLETED, store.CONVERTED, store.LEFT)
MAY_AGAIN = {
    "all": {store.COMPLETED, store.CONVERTED, store.LEFT},
    "conversions": {store.CONVERTED},
    "dismisses": {store.LEFT},
}


def ended_run(state: str, exited: datetime | None = ENDED) -> FlowRunRecord:
    return FlowRunRecord(
        "flow#f",
        "c1",
        state=state,
        occurrence="1",
        enrolled_at="2026-02-01T00:00:00.000Z",
        exited_at=None if exited is None else exited.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )


@pytest.mark.parametrize("interactions", ["all", "conversions", "dismisses"])
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_finished_run_may_enter_again_only_after_the_period_and_for_its_interactions(
    interactions: str, outcome: str
) -> None:
    reset = {"amount": 2, "unit": "weeks", "interactions": interactions}
    run = ended_run(outcome)
    allowed = outcome in MAY_AGAIN[interactions]
    assert entry.may_enter_again(run, reset, ENDED + timedelta(days=13, hours=23)) is False
    assert entry.may_enter_again(run, reset, ENDED + timedelta(days=14)) is allowed
    assert entry.may_enter_again(run, reset, ENDED + timedelta(days=400)) is allowed


@pytest.mark.parametrize(("unit", "days"), [("days", 3), ("weeks", 21), ("months", 90)])
def test_the_reset_period_counts_its_unit(unit: str, days: int) -> None:
    reset = {"amount": 3, "unit": unit}
    run = ended_run(store.COMPLETED)
    assert entry.may_enter_again(run, reset, ENDED + timedelta(days=days) - timedelta(seconds=1)) is False
    assert entry.may_enter_again(run, reset, ENDED + timedelta(days=days)) is True


def test_without_a_reset_or_while_active_nobody_enters_again() -> None:
    later = ENDED + timedelta(days=3650)
    for outcome in OUTCOMES:
        assert entry.may_enter_again(ended_run(outcome), None, later) is False
    active = ended_run(store.ACTIVE, exited=None)
    assert entry.may_enter_again(active, {"amount": 1, "unit": "days"}, later) is False


def test_a_run_without_an_exit_time_counts_from_its_entry() -> None:
    run = ended_run(store.LEFT, exited=None)  # enrolled 1 February
    reset = {"amount": 10, "unit": "days"}
    assert entry.may_enter_again(run, reset, at(2026, 2, 10, 23, 0)) is False
    assert entry.may_enter_again(run, reset, at(2026, 2, 11, 0, 0)) is True


# --------------------------------------------------------------------------
# Cohorts
# --------------------------------------------------------------------------


def test_entrants_of_one_window_share_a_cohort_and_the_next_window_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_FLOW_COHORT_SECONDS", "60")
    first, marker = cohorts.entry_cohort("f1", 2, at(2026, 3, 10, 12, 0, 0))
    assert (first, marker) == ("f1-v2-20260310120000", "2026-03-10T12:01:00.000Z#f1-v2-20260310120000")
    assert cohorts.entry_cohort("f1", 2, at(2026, 3, 10, 12, 0, 59, 999_999))[0] == first
    assert cohorts.entry_cohort("f1", 2, at(2026, 3, 10, 12, 1, 0))[0] == "f1-v2-20260310120100"
    assert cohorts.entry_cohort("f1", 3, at(2026, 3, 10, 12, 0, 30))[0] == "f1-v3-20260310120000"  # per version
    # Windows are in UTC whatever the moment's time zone.
    prague = datetime(2026, 3, 10, 13, 0, 30, tzinfo=runner.ZoneInfo("Europe/Prague"))
    assert cohorts.entry_cohort("f1", 2, prague)[0] == first


def test_the_window_size_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_FLOW_COHORT_SECONDS", "1")
    assert (
        cohorts.entry_cohort("f1", 1, at(2026, 3, 10, 12, 0, 7))[1] == "2026-03-10T12:00:08.000Z#f1-v1-20260310120007"
    )
    monkeypatch.delenv("HERALD_FLOW_COHORT_SECONDS")
    assert cohorts.window_seconds() == cohorts.DEFAULT_WINDOW_SECONDS


def test_child_cohorts_are_deterministic_and_distinct_per_parent_visit_and_branch() -> None:
    one = cohorts.child_cohort("f1", "f1-v1-20260310120000", 3, "no")
    assert one == cohorts.child_cohort("f1", "f1-v1-20260310120000", 3, "no")
    assert one.startswith("f1-") and len(one) <= 80  # a valid execution name
    others = {
        cohorts.child_cohort("f1", "f1-v1-20260310120000", 3, "yes"),
        cohorts.child_cohort("f1", "f1-v1-20260310120000", 4, "no"),
        cohorts.child_cohort("f1", "f1-v1-20260310120100", 3, "no"),
    }
    assert one not in others and len(others) == 3


# --------------------------------------------------------------------------
# The memberships stream: which records are entries
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_entry_app() -> Iterator[ModuleType]:
    """functions/flow_entry/app.py, loaded as the local host loads it (with its template environment)."""
    import sys

    spec = next(f for f in default_template().functions() if f.logical_id == "FlowEntryFunction")
    LocalFunction(spec)._load()
    yield sys.modules["herald_local_fn_FlowEntryFunction"]


def stream_record(event: str, group_key: str, contact_id: str = "c1") -> dict[str, Any]:
    keys = {"group_key": {"S": group_key}, "contact_id": {"S": contact_id}}
    return {"eventName": event, "dynamodb": {"Keys": keys}}


def test_only_segment_membership_inserts_are_entries(flow_entry_app: ModuleType) -> None:
    records = [
        stream_record("INSERT", "seg#prague", "c1"),
        stream_record("INSERT", "bdg#gold", "c2"),
        stream_record("INSERT", "aud#vip", "c3"),
        stream_record("INSERT", "cg#corporate", "c4"),
        stream_record("REMOVE", "seg#prague", "c5"),
        stream_record("MODIFY", "seg#prague", "c6"),
        stream_record("INSERT", "seg#brno", "c7"),
        {"eventName": "INSERT", "dynamodb": {}},
    ]
    assert flow_entry_app.segment_entries(records) == [("prague", "c1"), ("brno", "c7")]


def test_a_batch_without_entries_admits_nobody_and_reads_nothing(flow_entry_app: ModuleType) -> None:
    from local.functions import LocalContext

    event = {"Records": [stream_record("REMOVE", "seg#prague"), stream_record("INSERT", "bdg#gold")]}
    assert flow_entry_app.lambda_handler(event, LocalContext("f", "arn:f", 10)) == {"admitted": 0}


def test_days_and_months_are_added_on_the_flows_local_calendar() -> None:
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    evening = datetime(2026, 2, 28, 22, 0, tzinfo=new_york)  # 03:00 UTC on 1 March
    assert runner._add(evening, 1, "months", new_york) == datetime(2026, 3, 28, 22, 0, tzinfo=new_york)
    morning = datetime(2026, 3, 7, 9, 0, tzinfo=new_york)  # DST starts on 8 March
    assert runner._add(morning, 2, "days", new_york).astimezone(new_york).hour == 9
    assert runner._add(morning, 48, "hours", new_york).astimezone(new_york).hour == 10
