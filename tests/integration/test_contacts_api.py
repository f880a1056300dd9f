"""Contacts API against moto: CRUD, every error case, optimistic locking, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import Herald, load_event


def customer(**fields: object) -> dict[str, object]:
    return {"kind": "customer", **fields}


def test_create_then_get_returns_the_contact_with_its_version(herald: Herald) -> None:
    # Given a new customer
    body = customer(
        contact_id="c1",
        email="Ada@Example.com",
        phone="+420601123456",
        time_zone="Europe/Prague",
        consent={"email": {"granted": True, "source": "signup-form"}},
        attributes={"birthday": "1990-11-23", "ltv": 120.5},
    )
    # When it is created and read back
    created = herald.call("POST", "/contacts", body)
    fetched = herald.call("GET", "/contacts/c1")
    # Then both carry the same contact, version 1, with consent stamped
    assert created.status == 201
    assert created.headers["Location"] == "/contacts/c1"
    assert fetched.status == 200
    assert fetched.etag == '"1"'
    assert fetched.body["version"] == 1
    assert fetched.body["status"] == "Active"
    assert fetched.body["consent"]["email"]["source"] == "signup-form"
    assert fetched.body["consent"]["email"]["at"].endswith("Z")
    assert fetched.body["attributes"] == {"birthday": "1990-11-23", "ltv": 120.5}
    assert fetched.body == created.body


def test_sample_create_event_is_accepted(herald: Herald) -> None:
    reply = herald.send(load_event("api/create-contact"))
    assert reply.status == 201, reply.body
    assert reply.body["contact_id"] == "cust-0001"


def test_malformed_json_is_400(herald: Herald) -> None:
    reply = herald.send(load_event("api/malformed-body"))
    assert reply.status == 400
    assert reply.body["error"] == "bad_request"


def test_unknown_contact_is_404_for_every_verb(herald: Herald) -> None:
    assert herald.call("GET", "/contacts/nope").status == 404
    assert herald.call("PATCH", "/contacts/nope", {"first_name": "X"}).status == 404
    assert herald.call("DELETE", "/contacts/nope").status == 404
    missing = herald.call("GET", "/contacts/nope")
    assert missing.body == {"error": "not_found", "message": "contact nope does not exist", "id": "nope"}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("email", "not-an-email", "valid email"),
        ("phone", "0601123456", "E.164"),
        ("status", "Dormant", "'Active' or 'Inactive'"),
        ("time_zone", "Mars/Olympus", "IANA"),
        ("kind", "prospect", "'customer' or 'lead'"),
        ("favourite_colour", "blue", "unknown field"),
        ("attributes", {"birthday": "23/11/1990"}, "YYYY-MM-DD"),
    ],
)
def test_field_validation_is_422_naming_the_field(herald: Herald, field: str, value: object, problem: str) -> None:
    reply = herald.call("POST", "/contacts", customer(**{field: value}))
    assert reply.status == 422
    assert reply.body["error"] == "validation_failed"
    [error] = reply.body["errors"]
    assert error["field"].split(".")[0] == field
    assert problem in error["problem"]


def test_unknown_group_id_is_422(herald: Herald) -> None:
    reply = herald.call("POST", "/contacts", customer(group_ids=["ghost"]))
    assert reply.status == 422
    assert reply.body["errors"] == [{"field": "group_ids", "problem": "unknown group id ghost"}]
    assert herald.call("GET", "/contacts").body["items"] == []


def test_leads_cannot_join_customer_groups(herald: Herald) -> None:
    herald.call("POST", "/groups", {"group_id": "vip", "name": "VIP"})
    reply = herald.call("POST", "/contacts", {"kind": "lead", "group_ids": ["vip"]})
    assert reply.status == 422
    assert "customers only" in reply.body["errors"][0]["problem"]


def test_email_is_unique_per_kind_case_insensitively(herald: Herald) -> None:
    first = herald.call("POST", "/contacts", customer(email="ada@example.com"))
    duplicate = herald.call("POST", "/contacts", customer(email="ADA@example.com"))
    as_lead = herald.call("POST", "/contacts", {"kind": "lead", "email": "ada@example.com"})
    assert duplicate.status == 409
    assert duplicate.body["existing_contact_id"] == first.body["contact_id"]
    assert as_lead.status == 201


def test_existing_id_is_409(herald: Herald) -> None:
    assert herald.call("POST", "/contacts", customer(contact_id="c1")).status == 201
    reply = herald.call("POST", "/contacts", customer(contact_id="c1"))
    assert reply.status == 409


def test_patch_changes_only_what_it_names_and_merges_maps(herald: Herald) -> None:
    herald.call(
        "POST",
        "/contacts",
        customer(
            contact_id="c1",
            email="a@example.com",
            first_name="Ada",
            attributes={"tier": "silver", "city": "Brno"},
            consent={"email": {"granted": True, "source": "form"}, "sms": {"granted": True, "source": "form"}},
        ),
    )
    reply = herald.call(
        "PATCH",
        "/contacts/c1",
        {"last_name": "Lovelace", "attributes": {"tier": "gold", "city": None}, "consent": {"sms": None}},
    )
    assert reply.status == 200
    assert reply.body["first_name"] == "Ada"
    assert reply.body["last_name"] == "Lovelace"
    assert reply.body["attributes"] == {"tier": "gold"}
    assert set(reply.body["consent"]) == {"email"}
    assert reply.body["version"] == 2
    assert reply.etag == '"2"'


def test_changing_email_moves_the_unique_key(herald: Herald) -> None:
    herald.call("POST", "/contacts", customer(contact_id="c1", email="old@example.com"))
    assert herald.call("PATCH", "/contacts/c1", {"email": "new@example.com"}).status == 200
    reuse = herald.call("POST", "/contacts", customer(email="old@example.com"))
    taken = herald.call("POST", "/contacts", customer(email="new@example.com"))
    assert reuse.status == 201
    assert taken.status == 409


def test_stale_if_match_is_409_with_the_current_version(herald: Herald) -> None:
    herald.call("POST", "/contacts", customer(contact_id="c1"))
    herald.call("PATCH", "/contacts/c1", {"first_name": "A"}, {"If-Match": '"1"'})
    stale = herald.call("PATCH", "/contacts/c1", {"first_name": "B"}, {"If-Match": '"1"'})
    assert stale.status == 409
    assert stale.body["error"] == "stale_version"
    assert stale.body["current_version"] == 2
    assert herald.call("GET", "/contacts/c1").body["first_name"] == "A"
    stale_delete = herald.call("DELETE", "/contacts/c1", headers={"If-Match": '"1"'})
    assert stale_delete.status == 409


def test_bad_if_match_is_400(herald: Herald) -> None:
    herald.call("POST", "/contacts", customer(contact_id="c1"))
    assert herald.call("PATCH", "/contacts/c1", {"first_name": "A"}, {"If-Match": "yesterday"}).status == 400


def test_concurrent_edits_never_lose_an_update(herald: Herald) -> None:
    # Given one contact and twelve editors each setting their own attribute
    herald.call("POST", "/contacts", customer(contact_id="c1"))
    editors = [f"editor{i}" for i in range(12)]

    def edit(name: str) -> int:
        return herald.call("PATCH", "/contacts/c1", {"attributes": {name: True}}).status

    # When they all edit at once (without If-Match)
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(edit, editors))
    # Then every edit landed, each as its own version
    final = herald.call("GET", "/contacts/c1").body
    assert statuses == [200] * len(editors)
    assert set(final["attributes"]) == set(editors)
    assert final["version"] == 1 + len(editors)


def test_concurrent_if_match_edits_let_exactly_one_win(herald: Herald) -> None:
    herald.call("POST", "/contacts", customer(contact_id="c1"))

    def edit(name: str) -> int:
        return herald.call("PATCH", "/contacts/c1", {"first_name": name}, {"If-Match": '"1"'}).status

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sorted(pool.map(edit, ["A", "B", "C", "D"]))
    assert statuses == [200, 409, 409, 409]
    assert herald.call("GET", "/contacts/c1").body["version"] == 2


def test_delete_removes_contact_key_and_memberships(herald: Herald) -> None:
    herald.call("POST", "/groups", {"group_id": "vip", "name": "VIP"})
    herald.call("POST", "/contacts", customer(contact_id="c1", email="a@example.com", group_ids=["vip"]))
    assert herald.call("DELETE", "/contacts/c1").status == 204
    assert herald.call("GET", "/contacts/c1").status == 404
    assert herald.call("GET", "/groups/vip").body["member_count"] == 0
    assert herald.call("GET", "/groups/vip/members").body["items"] == []
    assert herald.call("POST", "/contacts", customer(email="a@example.com")).status == 201


def test_unknown_route_is_404_json(herald: Herald) -> None:
    reply = herald.call("GET", "/nothing-here")
    assert reply.status == 404
    assert reply.body["error"] == "not_found"


def test_openapi_document_lists_the_routes(herald: Herald) -> None:
    reply = herald.call("GET", "/openapi.json")
    assert reply.status == 200
    paths = reply.body["paths"]
    for path in ("/contacts", "/contacts/import", "/contacts/{contact_id}", "/groups", "/groups/{group_id}/members"):
        assert path in paths
    assert "ContactIn" in reply.body["components"]["schemas"]


def test_ids_that_cannot_exist_are_404_not_errors(herald: Herald) -> None:
    long_id = "x" * 3000  # beyond DynamoDB's key size
    assert herald.call("GET", f"/contacts/{long_id}").status == 404
    assert herald.call("GET", f"/groups/{long_id}").status == 404
    assert herald.call("GET", "/contacts/has%20space").status == 404
    assert herald.call("POST", f"/groups/{long_id}/members", {"contact_ids": ["c1"]}).status == 404
    herald.call("POST", "/contacts", customer(contact_id="c1"))
    assert herald.call("PUT", f"/contacts/c1/groups/{long_id}").status == 422
    assert herald.call("GET", f"/contacts?group_id={long_id}").status == 422


def test_oversized_attributes_are_422(herald: Herald) -> None:
    reply = herald.call("POST", "/contacts", customer(attributes={"notes": "x" * 150_000}))
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "attributes"


def test_import_rows_that_are_not_objects_are_rejected(herald: Herald) -> None:
    reply = herald.call("POST", "/contacts/import", {"contacts": ["not a row", 42, None]})
    assert reply.status == 200
    assert [r["outcome"] for r in reply.body["rows"]] == ["rejected"] * 3
    assert reply.body["rows"][0]["errors"][0]["field"] == "row"
    assert herald.call("POST", "/contacts/import", {"contacts": "all of them"}).status == 422
    odd = herald.call("POST", "/contacts/import", {"contacts": [{"kind": "lead", "email": 7}]})
    assert odd.status == 200
    assert odd.body["rows"][0]["outcome"] == "rejected"


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ({"x": 1e300}, "DynamoDB can store"),
        ({"x": float("nan")}, "DynamoDB can store"),
        ({"x": 10**40}, "38 digits"),
        ({"x": {"": 1}}, "empty key"),
        ({"x": {"set": {"a"}}}, None),
    ],
)
def test_attributes_dynamodb_cannot_store_are_422(herald: Herald, attributes: dict[str, object], problem: str) -> None:
    if problem is None:
        return  # JSON has no sets: nothing to send
    from herald.contacts.model import ContactIn

    with pytest.raises(ValueError, match=problem):
        ContactIn.model_validate({"kind": "customer", "attributes": attributes})


def test_a_number_dynamodb_refuses_is_a_422_through_the_api(herald: Herald) -> None:
    reply = herald.call("POST", "/contacts", '{"kind": "customer", "attributes": {"x": 1e300}}')
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "attributes"


def test_implausible_consent_dates_are_422(herald: Herald) -> None:
    reply = herald.call(
        "POST",
        "/contacts",
        customer(consent={"email": {"granted": True, "source": "x", "at": "0001-01-01T00:00:00+05:00"}}),
    )
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "consent.email.at"


def test_unchanged_consent_keeps_its_time_and_version(herald: Herald) -> None:
    herald.call("POST", "/contacts", customer(contact_id="c1", consent={"email": {"granted": True, "source": "web"}}))
    first = herald.call("GET", "/contacts/c1").body
    again = herald.call("PATCH", "/contacts/c1", {"consent": {"email": {"granted": True, "source": "web"}}}).body
    assert again["version"] == first["version"]
    assert again["consent"] == first["consent"]


def test_a_lost_if_match_delete_reports_the_current_version(herald: Herald) -> None:
    from herald.contacts import service
    from herald.store import contacts as store

    herald.call("POST", "/contacts", customer(contact_id="c1"))
    original = store.get
    calls = {"n": 0}

    def stale_then_real(contact_id: str):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        contact = original(contact_id)
        if calls["n"] == 1:  # someone edits right after our read
            herald.call("PATCH", "/contacts/c1", {"first_name": "Z"})
        return contact

    store.get = stale_then_real  # type: ignore[assignment]
    try:
        with pytest.raises(Exception) as caught:
            service.delete_contact("c1", if_match=1)
    finally:
        store.get = original  # type: ignore[assignment]
    assert getattr(caught.value, "current_version", None) == 2


def test_too_many_group_changes_at_once_are_422(herald: Herald) -> None:
    for i in range(50):
        herald.call("POST", "/groups", {"group_id": f"g{i}", "name": f"G{i}"})
    herald.call("POST", "/contacts", customer(contact_id="c1", group_ids=[f"g{i}" for i in range(25)]))
    reply = herald.call("PATCH", "/contacts/c1", {"group_ids": [f"g{i}" for i in range(25, 50)]})
    assert reply.status == 422
    assert reply.body["errors"][0]["field"] == "group_ids"
    assert herald.call("GET", "/contacts/c1").body["group_ids"] == sorted(f"g{i}" for i in range(25))


def test_bodies_over_the_limit_are_413_unread(herald: Herald) -> None:
    from herald.api.app import MAX_BODY_BYTES

    reply = herald.call("POST", "/contacts/import", "x" * (MAX_BODY_BYTES + 1))
    assert reply.status == 413
    assert reply.body["error"] == "payload_too_large"
