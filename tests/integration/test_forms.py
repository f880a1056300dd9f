"""Lead capture forms: CRUD, public submissions creating leads, and what is rejected and counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald import clock
from herald.store import forms as form_store
from local.apigw import ApiServer, Route, proxy_event
from tests.harness import Herald, Reply, load_event

NOW = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
_SUBMIT = Route.of("/forms/{form_id}/submit", "POST", "ApiFunction")

NEWSLETTER = {
    "id": "newsletter",
    "name": "Newsletter sign-up",
    "description": "Footer of every page",
    "fields": [
        {"name": "email", "required": True, "label": "Your email"},
        {"name": "first_name"},
        {"name": "last_name"},
        {"name": "company"},
    ],
    "consent": {"email": {"wording": "Send me the monthly newsletter."}},
    "published": True,
}


@pytest.fixture(autouse=True)
def _fixed_clock() -> None:
    clock.set_clock(lambda: NOW)


def create_form(h: Herald, **overrides: Any) -> dict[str, Any]:
    reply = h.call("POST", "/forms", {**NEWSLETTER, **overrides})
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.body
    return body


def submit(h: Herald, form_id: str, body: Any, ip: str = "203.0.113.7") -> Reply:
    """A public submission, as API Gateway sends it through the unauthenticated route."""
    path = f"/forms/{form_id}/submit"
    match = _SUBMIT.pattern.match(path)
    assert match is not None
    raw = body if isinstance(body, str) else json.dumps(body)
    event = proxy_event("POST", path, {"Content-Type": "application/json"}, raw.encode(), _SUBMIT, match)
    event["requestContext"]["identity"]["sourceIp"] = ip
    return h.send(event)


def stats(h: Herald, form_id: str) -> dict[str, int]:
    reply = h.call("GET", f"/forms/{form_id}")
    assert reply.status == 200, reply.body
    result: dict[str, int] = reply.body["stats"]
    return result


def leads(h: Herald) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = h.call("GET", "/contacts?kind=lead").body["items"]
    return items


def test_forms_are_created_read_listed_changed_and_deleted(herald: Herald) -> None:
    created = create_form(herald)
    assert created["version"] == 1 and created["published"] is True
    assert created["honeypot_field"] == "website" and created["rate_limit_per_minute"] == 10
    assert created["stats"] == {
        "submissions": 0,
        "rejected_malformed": 0,
        "rejected_spam": 0,
        "rejected_rate_limited": 0,
    }
    minimal = create_form(herald, id="minimal", fields=[{"name": "first_name"}], consent={})
    assert [f["name"] for f in minimal["fields"]] == ["email", "first_name"]  # email is always collected
    assert minimal["fields"][0]["required"] is True

    got = herald.call("GET", "/forms/newsletter")
    assert got.status == 200 and got.etag == '"1"' and got.body["consent"]["email"]["wording"].startswith("Send me")
    assert [f["id"] for f in herald.call("GET", "/forms").body["items"]] == ["minimal", "newsletter"]
    assert herald.call("POST", "/forms", NEWSLETTER).status == 409

    patched = herald.call("PATCH", "/forms/newsletter", {"published": False, "description": None}, {"If-Match": '"1"'})
    assert patched.status == 200, patched.body
    assert patched.etag == '"2"' and patched.body["published"] is False and patched.body["description"] is None
    stale = herald.call("PATCH", "/forms/newsletter", {"name": "Old"}, {"If-Match": '"1"'})
    assert stale.status == 409 and stale.body["error"] == "stale_version" and stale.body["current_version"] == 2

    assert herald.call("DELETE", "/forms/newsletter").status == 204
    assert herald.call("GET", "/forms/newsletter").status == 404
    assert herald.call("DELETE", "/forms/newsletter").status == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"id": "bad id!"}, "id"),
        ({"fields": [{"name": "email", "required": False}]}, "fields"),
        ({"fields": [{"name": "first name"}]}, "fields.0.name"),
        ({"fields": [{"name": "city"}, {"name": "city"}]}, "fields"),
        ({"fields": [{"name": "consent"}]}, "fields.0.name"),
        ({"consent": {"fax": {"wording": "yes"}}}, "consent.fax"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": 601}, "rate_limit_per_minute"),
        ({"honeypot_field": "company"}, "honeypot_field"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_forms_are_refused_naming_the_field(herald: Herald, change: dict[str, Any], field: str) -> None:
    reply = herald.call("POST", "/forms", {**NEWSLETTER, **change})
    assert reply.status == 422, reply.body
    named = reply.body["errors"][0]["field"]
    assert named == field or named.startswith(field + "."), reply.body


def test_a_patch_cannot_null_what_a_form_needs(herald: Herald) -> None:
    create_form(herald)
    for field in ("name", "fields", "published", "rate_limit_per_minute"):
        reply = herald.call("PATCH", "/forms/newsletter", {field: None})
        assert reply.status == 422 and reply.body["errors"][0]["field"] == field
    reply = herald.call("PATCH", "/forms/newsletter", {"honeypot_field": "first_name"})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "honeypot_field"


def test_a_submission_creates_a_lead_with_the_consent_the_form_collects(herald: Herald) -> None:
    create_form(herald)
    body = {"email": "ada@example.com", "first_name": "Ada", "company": "ACME", "consent": {"email": True}}
    reply = submit(herald, "newsletter", body)
    assert reply.status == 200 and reply.body == {"status": "received"}

    [lead] = leads(herald)
    assert lead["kind"] == "lead" and lead["email"] == "ada@example.com" and lead["first_name"] == "Ada"
    assert lead["attributes"] == {"company": "ACME"}
    assert lead["consent"] == {"email": {"granted": True, "source": "form:newsletter", "at": clock.to_iso(NOW)}}

    members = herald.call("GET", "/forms/newsletter/members").body["items"]
    assert members == [{"contact_id": lead["contact_id"], "added_at": clock.to_iso(NOW)}]
    [record] = list(form_store.form_members("newsletter", None, 10))
    assert (record.group_key, record.contact_id, record.kind) == ("form#newsletter", lead["contact_id"], "lead")
    form = herald.call("GET", "/forms/newsletter")
    assert form.body["stats"]["submissions"] == 1
    assert form.etag == '"1"'  # counting does not bump the version people edit with


def test_a_second_submission_updates_the_same_lead(herald: Herald) -> None:
    create_form(herald)
    first = {"email": "ada@example.com", "first_name": "Ada", "consent": {"email": True}}
    assert submit(herald, "newsletter", first).status == 200
    [lead] = leads(herald)
    clock.set_clock(lambda: NOW + timedelta(days=2))
    second = {"email": "ADA@example.com", "first_name": "Ada", "last_name": "Lovelace", "consent": {"email": False}}
    assert submit(herald, "newsletter", second).status == 200

    [again] = leads(herald)
    assert again["contact_id"] == lead["contact_id"]
    assert again["last_name"] == "Lovelace" and again["version"] == 2
    # An unticked box never withdraws consent given before (withdrawal is the unsubscribe path).
    assert again["consent"]["email"] == {"granted": True, "source": "form:newsletter", "at": clock.to_iso(NOW)}
    assert len(herald.call("GET", "/forms/newsletter/members").body["items"]) == 1
    assert stats(herald, "newsletter")["submissions"] == 2


def test_an_unticked_box_is_recorded_for_a_new_lead(herald: Herald) -> None:
    create_form(herald)
    assert submit(herald, "newsletter", {"email": "bob@example.com", "consent": {"email": False}}).status == 200
    [lead] = leads(herald)
    assert lead["consent"]["email"]["granted"] is False and lead["consent"]["email"]["source"] == "form:newsletter"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"email": "ada@example.com", "favourite_colour": "red"}, 422, "favourite_colour"),
        ({"first_name": "Ada"}, 422, "email"),
        ({"email": "not-an-email"}, 422, "email"),
        ({"email": "ada@example.com", "consent": {"sms": True}}, 422, "consent.sms"),
        ({"email": "ada@example.com", "first_name": ""}, 422, "first_name"),
        ({"email": "ada@example.com", "company": {"nested": 1}}, 422, "company"),
        (["ada@example.com"], 422, "body"),
        ("{not json", 400, "body"),
    ],
)
def test_malformed_submissions_are_refused_naming_the_field_and_counted(
    herald: Herald, body: Any, status: int, field: str
) -> None:
    create_form(herald)
    reply = submit(herald, "newsletter", body)
    assert reply.status == status, reply.body
    named = reply.body["errors"][0]["field"] if status == 422 else reply.body["field"]
    assert named == field or named.startswith(field + "."), reply.body
    assert stats(herald, "newsletter")["rejected_malformed"] == 1
    assert stats(herald, "newsletter")["submissions"] == 0
    assert leads(herald) == []


def test_a_filled_honeypot_is_answered_like_success_but_nothing_is_stored(
    herald: Herald, capsys: pytest.CaptureFixture[str]
) -> None:
    create_form(herald)
    bot = {
        "email": "bot@example.com",
        "first_name": "Bot",
        "website": "http://spam.example",
        "consent": {"email": True},
    }
    reply = submit(herald, "newsletter", bot)
    assert reply.status == 200 and reply.body == {"status": "received"}
    assert leads(herald) == []
    assert herald.call("GET", "/forms/newsletter/members").body["items"] == []
    assert stats(herald, "newsletter") == {
        "submissions": 0,
        "rejected_malformed": 0,
        "rejected_spam": 1,
        "rejected_rate_limited": 0,
    }
    assert "FormSubmissionSpam" in capsys.readouterr().out
    # An empty honeypot (what a person's browser sends) is fine.
    assert submit(herald, "newsletter", {"email": "ada@example.com", "website": ""}).status == 200
    assert len(leads(herald)) == 1


def test_submissions_are_rate_limited_per_source_ip_per_minute(herald: Herald) -> None:
    create_form(herald, rate_limit_per_minute=3)
    for n in range(3):
        assert submit(herald, "newsletter", {"email": f"p{n}@example.com"}, ip="198.51.100.1").status == 200
    limited = submit(herald, "newsletter", {"email": "p3@example.com"}, ip="198.51.100.1")
    assert limited.status == 429 and limited.body["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == "55"
    # Rejected attempts take slots too, and stay refused within the minute.
    assert submit(herald, "newsletter", "garbage", ip="198.51.100.1").status == 429
    assert submit(herald, "newsletter", {"email": "other@example.com"}, ip="198.51.100.2").status == 200
    assert stats(herald, "newsletter")["rejected_rate_limited"] == 2
    assert stats(herald, "newsletter")["rejected_malformed"] == 0
    assert len(leads(herald)) == 4

    clock.set_clock(lambda: NOW + timedelta(minutes=1))
    assert submit(herald, "newsletter", {"email": "p3@example.com"}, ip="198.51.100.1").status == 200
    assert stats(herald, "newsletter")["submissions"] == 5


def test_unknown_and_unpublished_forms_take_no_submissions(herald: Herald) -> None:
    assert submit(herald, "nope", {"email": "ada@example.com"}).status == 404
    assert submit(herald, "bad id!", {"email": "ada@example.com"}).status == 404
    create_form(herald, published=False)
    closed = submit(herald, "newsletter", {"email": "ada@example.com"})
    assert closed.status == 409 and closed.body["error"] == "form_not_published"
    assert closed.body["field"] == "published"
    assert stats(herald, "newsletter")["rejected_malformed"] == 1
    assert leads(herald) == []
    assert herald.call("PATCH", "/forms/newsletter", {"published": True}).status == 200
    assert submit(herald, "newsletter", {"email": "ada@example.com"}).status == 200
    assert len(leads(herald)) == 1


def test_deleting_a_form_forgets_its_captures_but_keeps_its_leads(herald: Herald) -> None:
    create_form(herald)
    for n in range(3):
        assert submit(herald, "newsletter", {"email": f"p{n}@example.com"}, ip=f"192.0.2.{n}").status == 200
    assert herald.call("DELETE", "/forms/newsletter").status == 204
    assert list(form_store.form_members("newsletter", None, 10)) == []
    assert len(leads(herald)) == 3
    assert submit(herald, "newsletter", {"email": "late@example.com"}).status == 404


def test_the_local_gateway_sends_submissions_through_the_public_route(herald: Herald) -> None:
    create_form(herald)
    server = ApiServer(herald.template, herald.host, "127.0.0.1", 0)
    try:
        assert server.routes[0].path == "/forms/{form_id}/submit" and server.routes[-1].path == "/{proxy+}"
        seen: list[dict[str, Any]] = []
        invoke = herald.host.invoke

        def spy(function: str, event: dict[str, Any]) -> Any:
            seen.append(event)
            return invoke(function, event)

        herald.host.invoke = spy  # type: ignore[method-assign]
        body = json.dumps({"email": "ada@example.com"}).encode()
        status, _, _ = server.dispatch("POST", "/forms/newsletter/submit", {"Content-Type": "application/json"}, body)
        assert status == 200
        assert seen[-1]["resource"] == "/forms/{form_id}/submit"
        assert seen[-1]["pathParameters"] == {"form_id": "newsletter"}
        status, _, _ = server.dispatch("GET", "/forms/newsletter", {}, b"")
        assert status == 200 and seen[-1]["resource"] == "/{proxy+}"
    finally:
        herald.host.invoke = invoke  # type: ignore[method-assign]
        server.httpd.server_close()


def test_the_sample_submit_event_creates_a_lead(herald: Herald) -> None:
    create_form(herald)
    event = load_event("api/submit-form")
    assert "Authorization" not in event["headers"]  # the public route carries no signature
    assert herald.send(event).status == 200
    [lead] = leads(herald)
    assert lead["email"] == "ada@example.com" and lead["consent"]["email"]["granted"] is True


def test_a_lead_form_campaign_reaches_captured_leads_and_never_a_deleted_one(herald: Herald) -> None:
    from herald.campaigns.tick import Tick
    from herald.store import enrolments

    create_form(herald)
    for name in ("ada", "bob"):
        assert submit(herald, "newsletter", {"email": f"{name}@example.com", "consent": {"email": True}}).status == 200
    ids = {lead["email"]: lead["contact_id"] for lead in leads(herald)}
    assert herald.call("DELETE", f"/contacts/{ids['bob@example.com']}").status == 204
    assert [m["contact_id"] for m in herald.call("GET", "/forms/newsletter/members").body["items"]] == [
        ids["ada@example.com"]
    ]
    body = {
        "id": "nurture",
        "name": "Lead nurture",
        "description": "Welcome new newsletter leads",
        "audience_type": "leads",
        "targeting": {"form_ids": ["newsletter"]},
        "published": True,
        "actions": [{"type": "email", "subject": "Welcome", "body": "Hello"}],
    }
    assert herald.call("POST", "/campaigns", body).status == 201
    assert herald.call("POST", "/campaigns/nurture/launch", {"force": True, "reason": "test"}).status == 200
    queued: list[dict[str, Any]] = []
    Tick(NOW, queued.extend).run()
    assert [m["contact_id"] for m in queued] == [ids["ada@example.com"]]
    assert enrolments.read_roster("campaign#nurture") == {ids["ada@example.com"]}
