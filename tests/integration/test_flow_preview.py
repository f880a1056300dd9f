"""POST /flows/{id}/steps/{step}/preview: a step for one contact, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from herald import clock
from herald.store.tables import CampaignRecord
from tests.harness import Herald, moto_herald


@pytest.fixture
def herald() -> Iterator[Herald]:
    with moto_herald() as h:
        yield h


def customer(h: Herald, contact_id: str, city: str, **fields: Any) -> None:
    body = {
        "contact_id": contact_id,
        "kind": "customer",
        "first_name": contact_id.title(),
        "email": f"{contact_id}@example.org",
        "consent": {"email": {"granted": True, "source": "test"}},
        "attributes": {"city": city},
        **fields,
    }
    assert h.call("POST", "/contacts", body).status == 201


def promo(state: str = "Launched") -> None:
    spec = {
        "name": "Promo",
        "kind": "ad_hoc",
        "published": True,
        "audience_type": "customers",
        "targeting": {"segment_ids": ["prague"]},
        "actions": [{"type": "email", "subject": "Promo for {{ contact.first_name }}", "body": "Deal"}],
    }
    now = clock.now_iso()
    CampaignRecord("campaign", "promo", name="Promo", spec=spec, state=state, created_at=now, updated_at=now).save()


GRAPH = {
    "start": "hello",
    "steps": [
        {"id": "hello", "type": "email", "subject": "Hi {{ contact.first_name }}", "body": "Welcome", "next": "opened"},
        {"id": "opened", "type": "condition", "rule": {"campaign": "self", "response": "opened"}, "yes": "reuse"},
        {"id": "reuse", "type": "cross_campaign_email", "campaign_id": "promo", "next": "points"},
        {"id": "points", "type": "award_points", "points": 5},
    ],
}


def test_preview_renders_routes_and_explains_qualification(herald: Herald) -> None:
    customer(herald, "ada", "Prague")
    customer(herald, "bo", "Brno")
    rule = {"field": "attributes.city", "op": "equals", "value": "Prague"}
    assert herald.call("POST", "/segments", {"id": "prague", "name": "Prague", "rule": rule}).status == 201
    herald.drain("SegmentWorkerFunction")
    promo()
    created = herald.call("POST", "/flows", {"name": "Welcome", "segments": ["prague"], "graph": GRAPH})
    assert created.status == 201, created.body
    flow_id = created.body["id"]

    def preview(step: str, contact: str) -> Any:
        reply = herald.call("POST", f"/flows/{flow_id}/steps/{step}/preview", {"contact_id": contact})
        assert reply.status == 200, reply.body
        return reply.body

    hello = preview("hello", "ada")
    assert hello["action"]["rendered"] == {"subject": "Hi Ada", "body": "Welcome"}
    assert hello["action"]["held_back"] is None and hello["in_flow_segments"] == ["prague"]
    assert preview("hello", "bo")["in_flow_segments"] == []

    assert preview("opened", "ada")["branch"] == {"taken": "no", "next": None}
    opened = {"event_id": "o1", "type": "campaign.opened", "properties": {"campaign_id": flow_id}}
    assert herald.call("POST", "/contacts/ada/events", opened).status == 201
    assert preview("opened", "ada")["branch"] == {"taken": "yes", "next": "reuse"}

    reuse = preview("reuse", "ada")
    assert reuse["campaign"]["qualifies"] is True, reuse
    assert reuse["action"]["rendered"]["subject"] == "Promo for Ada"
    assert preview("reuse", "bo")["campaign"] | {"blockers": []} == {
        "id": "promo",
        "exists": True,
        "state": "Launched",
        "targeted": False,
        "blockers": [],
        "qualifies": False,
    }
    assert preview("points", "ada")["action"] == {"type": "points", "would_apply": {"points": 5}}
    assert herald.call("POST", f"/flows/{flow_id}/steps/nope/preview", {"contact_id": "ada"}).status == 404
    assert herald.call("POST", f"/flows/{flow_id}/steps/hello/preview", {"contact_id": "zed"}).status == 404
    assert herald.call("POST", "/flows/missing/steps/hello/preview", {"contact_id": "ada"}).status == 404
