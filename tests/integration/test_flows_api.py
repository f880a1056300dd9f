"""Flows through the API: definitions, versions, refusals naming the field, status changes, deletion, step stats."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from herald import clock
from herald.errors import Conflict, StaleVersion
from herald.flows import entry, service
from herald.store import flows as flow_store
from local.template import default_template
from tests.harness import Herald
from tests.integration.test_campaign_tick import campaign

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OPENED = {"activity": "campaign.opened", "at_least": 1, "within_days": 2}
GRAPH: dict[str, Any] = {
    "start": "wait",
    "steps": [
        {"id": "wait", "type": "delay", "duration": {"amount": 2, "unit": "days"}, "next": "welcome"},
        {
            "id": "welcome",
            "type": "email",
            "subject": "Welcome",
            "body": "Hi {{ contact.first_name }}",
            "next": "opened",
        },
        {"id": "opened", "type": "condition", "rule": OPENED, "yes": "week", "no": "nudge"},
        {"id": "week", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "offer"},
        {"id": "offer", "type": "email", "subject": "An offer", "body": "10% off"},
        {"id": "nudge", "type": "sms", "text": "Did you see our email?"},
    ],
}


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


@pytest.fixture
def admitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flows whose current members were admitted (only the call is checked; entry has its own tests)."""
    calls: list[str] = []

    def admit(flow_id: str, now: datetime, deadline: float | None = None) -> int:
        calls.append(flow_id)
        flow_store.mark_members_admitted(flow_id, clock.to_iso(now))  # as the real admission does when done
        return 0

    monkeypatch.setattr(entry, "admit_current_members", admit)
    return calls


def segment(h: Herald, sid: str) -> None:
    rule = {"field": "status", "op": "equals", "value": "Active"}
    reply = h.call("POST", "/segments", {"id": sid, "name": sid.title(), "rule": rule})
    assert reply.status == 201, reply.body


def body(**settings: Any) -> dict[str, Any]:
    return {"name": "Onboarding", "segments": ["new"], "graph": copy.deepcopy(GRAPH), **settings}


def create(h: Herald, **settings: Any) -> dict[str, Any]:
    reply = h.call("POST", "/flows", body(**settings))
    assert reply.status == 201, reply.body
    return dict(reply.body)


@pytest.fixture
def herald_with_segments(herald: Herald) -> Herald:
    segment(herald, "new")
    segment(herald, "vip")
    return herald


def test_create_get_and_list_round_trip_every_setting(herald_with_segments: Herald) -> None:
    h = herald_with_segments
    every = {
        "name": "Onboarding",
        "description": "Welcome new customers",
        "segments": ["new", "vip"],
        "start": "2026-12-01T09:00",
        "end": "2027-01-01T00:00",
        "time_zone": "Europe/Prague",
        "category": "onboarding",
        "campaign_group": "lifecycle",
        "priority": 7,
        "show_after_conversion": False,
        "conversion_event": "purchase",
        "reset": {"amount": 3, "unit": "months", "interactions": "conversions"},
        "unsubscribe": {"scope": "category_and_group", "channels": "all"},
    }
    reply = h.call("POST", "/flows", {**every, "graph": GRAPH})
    assert reply.status == 201, reply.body
    flow_id = reply.body["id"]
    assert reply.headers["Location"] == f"/flows/{flow_id}"
    assert reply.etag == '"1"'
    assert reply.body["status"] == "draft" and reply.body["version"] == 1
    assert reply.body["settings"] == every
    assert [s["id"] for s in reply.body["graph"]["steps"]] == [s["id"] for s in GRAPH["steps"]]
    got = h.call("GET", f"/flows/{flow_id}")
    assert got.status == 200 and got.etag == '"1"'
    assert got.body["settings"] == every and got.body["graph"] == reply.body["graph"]
    assert got.body["graph"]["steps"][2]["rule"] == OPENED
    assert h.call("GET", "/flows/nope").status == 404
    record = flow_store.get(flow_id)
    assert record is not None and record.current_version == 1 and record.live_type is None
    version = flow_store.get_version(flow_id, 1)
    assert version is not None and version.spec == {"settings": every, "graph": reply.body["graph"]}


def test_listing_pages_with_a_cursor(herald_with_segments: Herald) -> None:
    ids = {create(herald_with_segments)["id"] for _ in range(3)}
    first = herald_with_segments.call("GET", "/flows?limit=2")
    assert len(first.body["items"]) == 2 and first.body["next_cursor"]
    rest = herald_with_segments.call("GET", f"/flows?limit=2&cursor={first.body['next_cursor']}")
    assert {f["id"] for f in first.body["items"] + rest.body["items"]} == ids
    assert herald_with_segments.call("GET", "/flows?cursor=garbage").status == 400


def _steps(*steps: dict[str, Any], start: str = "a") -> dict[str, Any]:
    return {"start": start, "steps": list(steps)}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"segments": []}, "segments", "targeting everyone is refused"),
        ({"segments": ["new", "nope"]}, "segments.1", "segment nope does not exist"),
        ({"segments": ["new", "new"]}, "segments", "listed twice"),
        *[
            (
                {
                    "graph": _steps(
                        {"id": "a", "type": "email", "subject": "s", "body": "b", "next": "b"},
                        {"id": "b", "type": kind},
                    )
                },
                "graph.steps.1.type",
                f"{kind} is a user-interaction step",
            )
            for kind in ("on_screen_message", "data_capture_form", "signature")
        ],
        (
            {
                "graph": _steps(
                    {"id": "a", "type": "email", "subject": "s", "body": "b", "next": "b"},
                    {"id": "b", "type": "sms", "text": "t", "next": "a"},
                )
            },
            "graph.steps.0",
            "a cycle without a delay: a → b → a",
        ),
        (
            {
                "graph": _steps(
                    {"id": "a", "type": "sms", "text": "t"},
                    {"id": "lost", "type": "sms", "text": "t"},
                )
            },
            "graph.steps.1",
            "cannot be reached from start",
        ),
        (
            {"graph": _steps({"id": "a", "type": "condition", "rule": OPENED, "yes": "gone"})},
            "graph.steps.0.yes",
            "dangling branch",
        ),
        (
            {"graph": _steps({"id": "a", "type": "cross_campaign_email", "campaign_id": "nope"})},
            "graph.steps.0.campaign_id",
            "campaign nope does not exist",
        ),
        (
            {"graph": _steps({"id": "a", "type": "add_to_segment", "segment_id": "nope"})},
            "graph.steps.0.segment_id",
            "segment nope does not exist",
        ),
        ({"show_after_conversion": False}, "conversion_event", "required when show_after_conversion is false"),
        (
            {"reset": {"amount": 1, "unit": "weeks", "interactions": "conversions"}},
            "conversion_event",
            "reset.interactions",
        ),
        ({"reset": {"amount": 0, "unit": "days"}}, "reset.amount", ""),
        ({"unsubscribe": {"scope": "category"}}, "category", "required when unsubscribe.scope is category"),
        ({"unsubscribe": {"scope": "group"}, "category": "x"}, "campaign_group", "required when unsubscribe.scope"),
        ({"start": "2026-12-02T00:00", "end": "2026-12-01T00:00"}, "end", "must be after start"),
        ({"time_zone": "Mars/Base"}, "time_zone", ""),
        ({"priority": 0}, "priority", ""),
        ({"conversion_event": "Not An Event!"}, "conversion_event", ""),
        ({"name": ""}, "name", ""),
        ({"description": "x" * 5000}, "description", ""),
        ({"audience": "everyone"}, "audience", "unknown field"),
    ],
)
def test_flows_that_cannot_run_are_refused_naming_the_field(
    herald_with_segments: Herald, change: dict[str, Any], field: str, words: str
) -> None:
    reply = herald_with_segments.call("POST", "/flows", body(**change))
    assert reply.status == 422, reply.body
    assert reply.body["errors"][0]["field"] == field, reply.body
    assert words in reply.body["errors"][0]["problem"], reply.body
    assert herald_with_segments.call("GET", "/flows").body["items"] == []


def test_every_problem_of_a_graph_is_reported_with_its_own_field(herald_with_segments: Herald) -> None:
    graph = _steps(
        {"id": "a", "type": "sms", "text": "t", "next": "gone"},
        {"id": "b", "type": "condition", "rule": OPENED, "no": "missing"},
    )
    reply = herald_with_segments.call("POST", "/flows", body(graph=graph))
    assert reply.status == 422
    assert [e["field"] for e in reply.body["errors"]] == ["graph.steps.0.next", "graph.steps.1.no"]


def test_cross_campaign_and_segment_steps_naming_what_exists_are_accepted(herald_with_segments: Herald) -> None:
    campaign(herald_with_segments, "winter")
    graph = _steps(
        {"id": "a", "type": "cross_campaign_email", "campaign_id": "winter", "next": "b"},
        {"id": "b", "type": "add_to_segment", "segment_id": "vip", "next": "c"},
        {"id": "c", "type": "remove_from_segment", "segment_id": "new"},
    )
    created = create(herald_with_segments, graph=graph)
    assert [s["type"] for s in created["graph"]["steps"]] == [
        "cross_campaign_email",
        "add_to_segment",
        "remove_from_segment",
    ]


def test_a_blank_time_zone_is_the_platform_default(
    herald_with_segments: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_DEFAULT_TIME_ZONE", "America/New_York")
    assert create(herald_with_segments)["settings"]["time_zone"] == "America/New_York"
    assert create(herald_with_segments, time_zone="Asia/Tokyo")["settings"]["time_zone"] == "Asia/Tokyo"
    monkeypatch.delenv("HERALD_DEFAULT_TIME_ZONE")
    assert create(herald_with_segments)["settings"]["time_zone"] == "UTC"


def test_defaults_of_an_unset_flow(herald_with_segments: Herald) -> None:
    settings = create(herald_with_segments)["settings"]
    assert settings["show_after_conversion"] is True and settings["conversion_event"] is None
    assert settings["reset"] is None and settings["priority"] is None
    assert settings["unsubscribe"] == {"scope": "all", "channels": "this"}
    assert settings["start"] is None and settings["end"] is None


def test_every_edit_is_a_new_version_and_old_ones_stay_readable(herald_with_segments: Herald) -> None:
    h = herald_with_segments
    created = create(h, conversion_event="purchase")
    flow_id = created["id"]
    graph = copy.deepcopy(GRAPH)
    graph["steps"][4]["subject"] = "A better offer"
    changed = h.call(
        "PATCH",
        f"/flows/{flow_id}",
        {"graph": graph, "reset": {"amount": 30, "unit": "days"}, "show_after_conversion": False},
        headers={"If-Match": '"1"'},
    )
    assert changed.status == 200, changed.body
    assert changed.body["version"] == 2 and changed.etag == '"2"'
    assert changed.body["settings"]["reset"] == {"amount": 30, "unit": "days", "interactions": "all"}
    assert changed.body["settings"]["show_after_conversion"] is False
    assert changed.body["settings"]["name"] == "Onboarding"  # untouched settings carry over
    assert changed.body["graph"]["steps"][4]["subject"] == "A better offer"
    versions = h.call("GET", f"/flows/{flow_id}/versions").body["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["settings"] == created["settings"] and versions[0]["graph"] == created["graph"]
    assert versions[0]["graph"]["steps"][4]["subject"] == "An offer"
    assert versions[1]["graph"] == changed.body["graph"] and versions[1]["created_at"]
    stale = h.call("PATCH", f"/flows/{flow_id}", {"name": "Late"}, headers={"If-Match": '"1"'})
    assert stale.status == 409 and stale.body["current_version"] == 2
    assert h.call("PATCH", f"/flows/{flow_id}", {"name": "x"}, headers={"If-Match": "v1"}).status == 400
    assert h.call("GET", f"/flows/{flow_id}").body["settings"]["name"] == "Onboarding"
    assert h.call("GET", "/flows/nope/versions").status == 404


def test_an_edit_is_validated_with_the_settings_it_is_merged_over(herald_with_segments: Herald) -> None:
    h = herald_with_segments
    flow_id = create(h, show_after_conversion=False, conversion_event="purchase")["id"]
    cleared = h.call("PATCH", f"/flows/{flow_id}", {"conversion_event": None})
    assert cleared.status == 422 and cleared.body["errors"][0]["field"] == "conversion_event"
    gone = h.call("PATCH", f"/flows/{flow_id}", {"segments": ["nope"]})
    assert gone.status == 422 and gone.body["errors"][0]["field"] == "segments.0"
    cycle = _steps({"id": "a", "type": "sms", "text": "t", "next": "a"})
    looped = h.call("PATCH", f"/flows/{flow_id}", {"graph": cycle})
    assert looped.status == 422 and looped.body["errors"][0]["field"].startswith("graph.steps"), looped.body
    forms = h.call("PATCH", f"/flows/{flow_id}", {"graph": _steps({"id": "a", "type": "signature"})})
    assert forms.status == 422 and forms.body["errors"][0]["field"] == "graph.steps.0.type"
    assert [v["version"] for v in h.call("GET", f"/flows/{flow_id}/versions").body["items"]] == [1]


def test_status_changes_and_their_refusals(herald_with_segments: Herald, admitted: list[str]) -> None:
    h = herald_with_segments
    flow_id = create(h)["id"]
    for verb in ("pause", "resume", "stop"):
        assert h.call("POST", f"/flows/{flow_id}/{verb}").status == 409, verb
    active = h.call("POST", f"/flows/{flow_id}/activate")
    assert active.status == 200 and active.body["status"] == "active"
    assert active.body["activated_at"] == "2026-11-23T12:00:00.000Z"
    assert admitted == [flow_id]
    assert [f.entity_id for f in flow_store.active_flows()] == [flow_id]
    assert h.call("POST", f"/flows/{flow_id}/activate").status == 409
    assert h.call("POST", f"/flows/{flow_id}/resume").status == 409
    paused = h.call("POST", f"/flows/{flow_id}/pause")
    assert paused.status == 200 and paused.body["status"] == "paused"
    assert flow_store.active_flows() == []
    assert h.call("POST", f"/flows/{flow_id}/pause").status == 409
    assert h.call("POST", f"/flows/{flow_id}/activate").status == 409
    assert h.call("POST", f"/flows/{flow_id}/resume").body["status"] == "active"
    assert admitted == [flow_id, flow_id]
    assert [f.entity_id for f in flow_store.active_flows()] == [flow_id]
    # An active flow may be edited: new entrants take the new version.
    assert h.call("PATCH", f"/flows/{flow_id}", {"priority": 3}).body["version"] == 2
    stopped = h.call("POST", f"/flows/{flow_id}/stop")
    assert stopped.status == 200 and stopped.body["status"] == "stopped"
    assert stopped.body["stopped_at"] == "2026-11-23T12:00:00.000Z"
    assert flow_store.active_flows() == []
    for verb in ("activate", "pause", "resume", "stop"):
        refused = h.call("POST", f"/flows/{flow_id}/{verb}")
        assert refused.status == 409 and refused.body["status"] == "stopped", verb
    assert h.call("PATCH", f"/flows/{flow_id}", {"name": "Again"}).status == 409
    assert admitted == [flow_id, flow_id]
    assert h.call("POST", "/flows/nope/activate").status == 404


def test_a_paused_flow_can_stop(herald_with_segments: Herald, admitted: list[str]) -> None:
    flow_id = create(herald_with_segments)["id"]
    herald_with_segments.call("POST", f"/flows/{flow_id}/activate")
    herald_with_segments.call("POST", f"/flows/{flow_id}/pause")
    assert herald_with_segments.call("POST", f"/flows/{flow_id}/stop").body["status"] == "stopped"


def test_a_flow_whose_end_has_passed_cannot_activate(herald_with_segments: Herald, admitted: list[str]) -> None:
    # 12:00 UTC is 13:00 in Prague: an end at 12:30 Prague time has passed.
    flow_id = create(herald_with_segments, end="2026-11-23T12:30", time_zone="Europe/Prague")["id"]
    refused = herald_with_segments.call("POST", f"/flows/{flow_id}/activate")
    assert refused.status == 422 and refused.body["errors"][0]["field"] == "end"
    assert admitted == []
    later = create(herald_with_segments, end="2026-11-23T12:30", time_zone="UTC")["id"]
    assert herald_with_segments.call("POST", f"/flows/{later}/activate").status == 200


def test_racing_status_changes_do_one_thing(herald_with_segments: Herald, admitted: list[str]) -> None:
    flow_id = create(herald_with_segments)["id"]
    seen_as_draft = flow_store.get(flow_id)
    assert seen_as_draft is not None
    assert herald_with_segments.call("POST", f"/flows/{flow_id}/activate").status == 200
    with pytest.raises(Conflict, match="became active meanwhile"):
        service._transition(seen_as_draft, service.FlowStatus.DRAFT, service.FlowStatus.ACTIVE)
    assert admitted == [flow_id]


def test_only_draft_and_stopped_flows_can_be_deleted(herald_with_segments: Herald, admitted: list[str]) -> None:
    h = herald_with_segments
    draft = create(h)["id"]
    h.call("PATCH", f"/flows/{draft}", {"name": "Edited"})
    assert len(flow_store.versions(draft)) == 2
    assert h.call("DELETE", f"/flows/{draft}").status == 204
    assert h.call("GET", f"/flows/{draft}").status == 404
    assert flow_store.versions(draft) == []
    assert h.call("DELETE", f"/flows/{draft}").status == 404
    running = create(h)["id"]
    h.call("POST", f"/flows/{running}/activate")
    assert h.call("DELETE", f"/flows/{running}").status == 409
    h.call("POST", f"/flows/{running}/pause")
    assert h.call("DELETE", f"/flows/{running}").status == 409
    h.call("POST", f"/flows/{running}/stop")
    assert h.call("DELETE", f"/flows/{running}").status == 204
    assert flow_store.get(running) is None and flow_store.versions(running) == []


def test_stats_per_step_in_graph_order_then_retired_steps(herald_with_segments: Herald) -> None:
    h = herald_with_segments
    flow_id = create(h)["id"]
    flow_store.add_step_counters(flow_id, "welcome", {"reached": 10, "queued": 9, "skipped_unsubscribed": 1})
    flow_store.add_step_counters(flow_id, "welcome", {"sent": 8, "suppressed": 1})
    flow_store.add_step_counters(flow_id, "nudge", {"reached": 4, "failed": 1})
    first = h.call("GET", f"/flows/{flow_id}/stats")
    assert first.status == 200
    assert [(s["step_id"], s["type"]) for s in first.body["steps"]] == [
        ("wait", "delay"),
        ("welcome", "email"),
        ("opened", "condition"),
        ("week", "delay"),
        ("offer", "email"),
        ("nudge", "sms"),
    ]
    welcome = first.body["steps"][1]
    assert welcome["counters"] == {"reached": 10, "queued": 9, "skipped_unsubscribed": 1, "sent": 8, "suppressed": 1}
    assert first.body["steps"][0]["counters"] == {}
    assert all(s["in_current_version"] for s in first.body["steps"])
    # Version 2 drops the SMS branch: its step is still reported, after the current ones.
    graph = copy.deepcopy(GRAPH)
    graph["steps"][2]["no"] = None
    graph["steps"] = graph["steps"][:5]
    assert h.call("PATCH", f"/flows/{flow_id}", {"graph": graph}).status == 200
    second = h.call("GET", f"/flows/{flow_id}/stats").body
    assert second["version"] == 2
    assert [s["step_id"] for s in second["steps"]] == ["wait", "welcome", "opened", "week", "offer", "nudge"]
    assert second["steps"][-1] == {
        "step_id": "nudge",
        "type": "sms",
        "in_current_version": False,
        "counters": {"reached": 4, "failed": 1},
    }
    assert h.call("GET", "/flows/nope/stats").status == 404


def test_the_openapi_document_lists_the_flow_routes(herald: Herald) -> None:
    paths = herald.call("GET", "/openapi.json").body["paths"]
    assert {"/flows", "/flows/{flow_id}", "/flows/{flow_id}/versions", "/flows/{flow_id}/stats"} <= set(paths)


def test_the_default_time_zone_is_a_template_parameter_every_function_reads() -> None:
    template = default_template()
    assert template.parameters["DefaultTimeZone"] == "UTC"
    assert {f.environment["HERALD_DEFAULT_TIME_ZONE"] for f in template.functions()} == {"UTC"}


def test_two_racing_edits_make_one_version(herald_with_segments: Herald) -> None:
    flow_id = create(herald_with_segments)["id"]
    seen_at_version_1 = flow_store.get(flow_id)
    assert seen_at_version_1 is not None
    assert herald_with_segments.call("PATCH", f"/flows/{flow_id}", {"name": "First"}).status == 200
    seen_at_version_1.current_version = 2
    seen_at_version_1.name = "Second"
    late = service.Operation("put", seen_at_version_1, service.FLOW_LABEL)
    with pytest.raises(StaleVersion):
        service._commit(seen_at_version_1, late, service._version(flow_id, 2, seen_at_version_1.spec, "now"))
    versions = herald_with_segments.call("GET", f"/flows/{flow_id}/versions").body["items"]
    assert [(v["version"], v["settings"]["name"]) for v in versions] == [(1, "Onboarding"), (2, "First")]
