"""The rule language: what parses, what is refused (with the JSON path), and explain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from herald.dynamodb_json import decode_item
from herald.rules.calendar import Calendar
from herald.rules.compiler import compile_rule
from herald.rules.model import RuleError, parse_rule
from herald.rules.reference import Reference
from herald.segments.events import membership_event

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def problems(source: Any) -> list[dict[str, str]]:
    with pytest.raises(RuleError) as caught:
        parse_rule(source)
    return caught.value.problems


@pytest.mark.parametrize(
    ("source", "field", "fragment"),
    [
        ({"field": "status", "op": "resembles", "value": 1}, "rule.op", "unknown operator 'resembles'"),
        ({"field": "shoe", "op": "exists"}, "rule.field", "unknown field kind 'shoe'"),
        (
            {"field": "status", "op": "equals", "value": "Sleeping"},
            "rule.value",
            "type mismatch: must be one of Active, Inactive",
        ),
        ({"field": "status", "op": "greater", "value": 1}, "rule.op", "does not apply to status"),
        (
            {"field": "bounce.soft_count", "op": "greater", "value": "5"},
            "rule.value",
            "type mismatch: greater needs a number",
        ),
        ({"field": "consent.email", "op": "equals", "value": 1}, "rule.value", "must be true or false"),
        ({"field": "attributes.x", "op": "between", "value": [5, 1]}, "rule.value", "low must not exceed high"),
        ({"field": "attributes.x", "op": "between", "value": [1, "a"]}, "rule.value", "type mismatch"),
        ({"field": "attributes.x", "op": "in", "value": []}, "rule.value", "type mismatch: in needs a list"),
        ({"field": "attributes.x", "op": "exists", "value": 3}, "rule.value", "takes no value"),
        ({"field": "attributes.x", "op": "equals"}, "rule.value", "needs a value"),
        ({"field": "created_at", "op": "before", "value": "2026-02-30"}, "rule.value", "needs a date YYYY-MM-DD"),
        ({"field": "created_at", "op": "within_last_days", "value": -1}, "rule.value", "whole number of days"),
        ({"field": "segment", "op": "contains", "value": "bad id!"}, "rule.value", "must be an id"),
        ({"all": []}, "rule.all", "non-empty list"),
        ({"all": [{"field": "kind", "op": "equals", "value": "lead"}, 7]}, "rule.all[1]", "must be an object"),
        ({"any": [{"not": {"field": "x"}}]}, "rule.any[0].not.field", "unknown field kind"),
        ({"field": "kind", "op": "equals", "value": "lead", "any": []}, "rule", "exactly one of"),
        ({"field": "kind", "op": "equals", "value": "lead", "extra": 1}, "rule.extra", "unknown key"),
        ({"activity": "purchase", "within_days": 30}, "rule", "needs at_least or at_most"),
        ({"activity": "purchase", "at_least": 1}, "rule.within_days", "is required"),
        ({"activity": "purchase", "at_least": 3, "at_most": 1, "within_days": 3}, "rule", "at_least must not exceed"),
        (
            {
                "activity": "purchase",
                "at_least": 1,
                "within_days": 3,
                "where": [{"property": "amount", "op": "anniversary_today"}],
            },
            "rule.where[0].op",
            "does not apply",
        ),
        ({"campaign": "spring", "response": "bounced"}, "rule.response", "must be one of received"),
        ({"field": "kind", "op": "equals", "value": [1]}, "rule.value", "type mismatch: must be one of"),
        ({"field": "status", "op": "in", "value": [["Active"]]}, "rule.value", "type mismatch: must be one of"),
        ({"field": "attributes.x", "op": "greater", "value": 1e200}, "rule.value", "type mismatch"),
        ({"activity": "purchase", "at_least": 1, "within_days": 500}, "rule.within_days", "from 0 to 400"),
        ({"activity": "purchase", "at_least": 60, "within_days": 5}, "rule.at_least", "from 0 to 50"),
    ],
)
def test_bad_rules_name_the_node_and_the_problem(source: dict[str, Any], field: str, fragment: str) -> None:
    found = problems(source)
    assert found[0]["field"] == field
    assert fragment in found[0]["problem"]


def test_rules_have_bounded_depth_and_size() -> None:
    deep: dict[str, Any] = {"field": "email", "op": "exists"}
    for _ in range(20):
        deep = {"not": deep}
    assert "nest at most" in problems(deep)[0]["problem"]
    wide = {"any": [{"field": "email", "op": "exists"}] * 101}
    assert "at most 100 conditions" in problems(wide)[0]["problem"]


def test_references_are_collected_for_existence_and_cycle_checks() -> None:
    rule = parse_rule(
        {
            "any": [
                {"field": "segment", "op": "contains", "value": "a"},
                {"field": "badge", "op": "not_contains", "value": "b"},
            ]
        }
    )
    assert (rule.segments, rule.badges, rule.conditions) == ({"a"}, {"b"}, 2)


def test_explain_reports_each_condition_with_the_value_seen() -> None:
    rule = parse_rule(
        {
            "all": [
                {"field": "attributes.city", "op": "equals", "value": "Prague"},
                {"not": {"field": "bounce.hard", "op": "equals", "value": True}},
                {"activity": "purchase", "at_least": 1, "within_days": 30},
                {"campaign": "spring", "response": "opened"},
            ]
        }
    )
    raw = {
        "contact_id": {"S": "c1"},
        "attributes": {"M": {"city": {"S": "Brno"}}},
        "bounce": {"M": {"hard": {"BOOL": False}}},
        "activity": {"M": {"purchase": {"L": [{"L": [{"N": str(int(NOW.timestamp()) - 86400)}, {"M": {}}]}]}}},
        "campaigns_opened": {"SS": ["spring"]},
    }
    explained = Reference(NOW).explain(rule, decode_item(raw))
    assert explained["verdict"] is False is compile_rule(rule, NOW)(raw)
    city, not_hard, activity, response = explained["children"]
    assert (city["verdict"], city["seen"]) == (False, "Brno")
    assert not_hard["verdict"] is True and not_hard["children"][0]["seen"] is False
    assert activity["seen"] == {"count": 1} and activity["verdict"] is True
    assert response == {
        "path": "rule.all[3]",
        "verdict": True,
        "condition": {"campaign": "spring", "response": "opened"},
        "seen": True,
    }


def test_calendar_days_are_per_time_zone() -> None:
    calendar = Calendar(datetime(2026, 11, 23, 23, 30, tzinfo=UTC))
    assert calendar.today("Pacific/Auckland") == "2026-11-24"
    assert calendar.today("America/Los_Angeles") == "2026-11-23"
    assert calendar.today("Not/AZone") == calendar.today(None) == "2026-11-23"
    assert calendar.days_ago("UTC", 30) == "2026-10-24"
    assert Calendar(datetime(2027, 2, 28, tzinfo=UTC)).anniversaries("UTC") == ("02-28", "02-29")
    assert Calendar(datetime(2028, 2, 28, tzinfo=UTC)).anniversaries("UTC") == ("02-28",)


def test_membership_stream_records_become_enter_and_exit_events() -> None:
    insert = {
        "eventID": "e1",
        "eventName": "INSERT",
        "dynamodb": {
            "Keys": {"group_key": {"S": "seg#vip"}, "contact_id": {"S": "c1"}},
            "NewImage": {"group_key": {"S": "seg#vip"}, "contact_id": {"S": "c1"}, "source": {"S": "rule"}},
            "ApproximateCreationDateTime": 1795442116,
        },
    }
    assert membership_event(insert) == {
        "event_id": "e1",
        "type": "segment",
        "id": "vip",
        "contact_id": "c1",
        "change": "entered",
        "source": "rule",
        "at": 1795442116,
    }
    remove = {
        **insert,
        "eventName": "REMOVE",
        "dynamodb": {**insert["dynamodb"], "OldImage": {"source": {"S": "manual"}}},
    }
    assert membership_event(remove)["change"] == "exited"
    assert membership_event({**insert, "eventName": "MODIFY"}) is None
    group = {**insert, "dynamodb": {"Keys": {"group_key": {"S": "cg#vip"}, "contact_id": {"S": "c1"}}}}
    assert membership_event(group) is None


def test_independent_targets_are_evaluated_together_and_dependent_ones_in_order() -> None:
    from herald.segments.evaluation import evaluate, targets_of
    from herald.store.tables import SegmentRecord

    def record(entity_id: str, rule: dict[str, Any]) -> SegmentRecord:
        return SegmentRecord(entity_type="segment", entity_id=entity_id, name=entity_id, rule=rule, state="Ready")

    prague = {"field": "attributes.city", "op": "equals", "value": "Prague"}
    rich = {"field": "attributes.spend", "op": "greater", "value": 100}
    independent = targets_of([record("a", prague), record("b", rich)], NOW)
    assert independent[0].batch is not None and independent[0].batch is independent[1].batch
    item = {"contact_id": {"S": "c1"}, "version": {"N": "3"}, "attributes": {"M": {"city": {"S": "Prague"}}}}
    change = evaluate(item, independent)
    assert change is not None and change.segment_ids == {"a"} and change.version == 3
    dependent = targets_of(
        [record("b", {"field": "segment", "op": "contains", "value": "a"}), record("a", prague)], NOW
    )
    assert [t.id for t in dependent] == ["a", "b"] and dependent[0].batch is None
    change = evaluate(item, dependent)
    assert change is not None and change.segment_ids == {"a", "b"}  # b saw a's new membership in the same pass
