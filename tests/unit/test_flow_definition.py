"""Flow definitions: every step type parses; graphs that cannot run are refused, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from herald.flows.definition import FlowGraph

ACTIVE = {"field": "status", "op": "equals", "value": "Active"}


def flow(*steps: dict[str, Any], start: str = "wait") -> dict[str, Any]:
    return {"start": start, "steps": list(steps)}


def problem(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        FlowGraph.model_validate(data)
    return str(caught.value)


EVERY_STEP = [
    {"id": "wait", "type": "delay", "duration": {"amount": 2, "unit": "days"}, "next": "opened"},
    {"id": "opened", "type": "condition", "rule": ACTIVE, "yes": "mail", "no": "text"},
    {"id": "mail", "type": "email", "subject": "Hi {{ contact.first_name }}", "body": "Welcome", "next": "morning"},
    {"id": "text", "type": "sms", "text": "Hi", "next": "morning"},
    {"id": "morning", "type": "delay", "until": {"time": "09:00", "weekday": "monday"}, "next": "push"},
    {"id": "push", "type": "push", "title": "T", "body": "B", "next": "reuse"},
    {"id": "reuse", "type": "cross_campaign_email", "campaign_id": "winter", "next": "hook"},
    {"id": "hook", "type": "web_service", "url": "https://crm.example.com/hook", "next": "pdf"},
    {"id": "pdf", "type": "export_pdf", "template": "<h1>{{ contact.first_name }}</h1>", "next": "vip"},
    {"id": "vip", "type": "add_to_segment", "segment_id": "vip", "next": "points"},
    {"id": "points", "type": "award_points", "points": 10, "next": "stage"},
    {"id": "stage", "type": "update_stage", "stage": "engaged"},
]


def test_every_step_type_makes_a_runnable_flow() -> None:
    graph = FlowGraph.model_validate(flow(*EVERY_STEP))
    assert [s.type for s in graph.steps][:3] == ["delay", "condition", "email"]
    assert graph.step("opened").branches() == {"yes": "mail", "no": "text", "next": None}


@pytest.mark.parametrize("kind", ["on_screen_message", "data_capture_form", "signature"])
def test_user_interaction_steps_are_refused(kind: str) -> None:
    message = problem(flow({"id": "wait", "type": kind, "next": None}))
    assert "steps.0.type" in message and "user-interaction" in message


def test_a_dangling_branch_is_refused_naming_it() -> None:
    message = problem(flow({"id": "wait", "type": "condition", "rule": ACTIVE, "yes": "nowhere"}))
    assert "steps.0.yes" in message and "dangling" in message


def test_an_unknown_start_and_duplicate_ids_are_refused() -> None:
    message = problem(flow({"id": "a", "type": "sms", "text": "x"}, {"id": "a", "type": "sms", "text": "y"}))
    assert "steps.1.id" in message and "start: no step has id wait" in message


def test_an_unreachable_step_is_refused() -> None:
    message = problem(flow({"id": "wait", "type": "sms", "text": "x"}, {"id": "lost", "type": "sms", "text": "y"}))
    assert "steps.1" in message and "lost cannot be reached" in message


def test_a_cycle_without_a_delay_is_refused_and_one_with_a_delay_is_allowed() -> None:
    looping = flow(
        {"id": "wait", "type": "condition", "rule": ACTIVE, "yes": "mail", "no": None},
        {"id": "mail", "type": "email", "subject": "s", "body": "b", "next": "wait"},
    )
    assert "a cycle without a delay: " in problem(looping)
    waiting = flow(
        {"id": "wait", "type": "condition", "rule": ACTIVE, "yes": "mail", "no": None},
        {"id": "mail", "type": "email", "subject": "s", "body": "b", "next": "pause"},
        {"id": "pause", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "wait"},
    )
    assert FlowGraph.model_validate(waiting).start == "wait"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"id": "wait", "type": "delay"}, "exactly one of duration or until"),
        ({"id": "wait", "type": "delay", "duration": {"amount": 1, "unit": "years"}}, "duration.unit"),
        ({"id": "wait", "type": "delay", "until": {"time": "25:00"}}, "until.time"),
        ({"id": "wait", "type": "condition", "rule": {"field": "shoe", "op": "exists"}}, "rule"),
        ({"id": "wait", "type": "web_service", "url": "http://169.254.169.254/latest"}, "url"),
        ({"id": "wait", "type": "email", "subject": "{{ shoe_size }}", "body": "b"}, "subject"),
        ({"id": "wait", "type": "award_points", "points": "many"}, "points"),
    ],
)
def test_bad_step_contents_are_refused_naming_the_field(step: dict[str, Any], expected: str) -> None:
    assert expected in problem(flow(step))
