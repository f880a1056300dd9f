"""Contact validation rules, without any AWS."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald.contacts.model import ContactIn, ContactPatch, email_key
from herald.contacts.service import field_errors


def errors(**fields: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        ContactIn.model_validate({"kind": "customer", **fields})
    return {e["field"]: e["problem"] for e in field_errors(caught.value)}


@pytest.mark.parametrize("phone", ["+447700900123", "+14155552671", "+420601123456"])
def test_e164_numbers_are_accepted(phone: str) -> None:
    assert ContactIn(kind="customer", phone=phone).phone == phone  # type: ignore[arg-type]


@pytest.mark.parametrize("phone", ["447700900123", "+0447700900123", "+44 7700 900123", "+1", "+1234567890123456"])
def test_non_e164_numbers_are_refused(phone: str) -> None:
    assert "E.164" in errors(phone=phone)["phone"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Prague", "America/Argentina/Buenos_Aires"])
def test_iana_zones_are_accepted(zone: str) -> None:
    assert ContactIn(kind="customer", time_zone=zone).time_zone == zone  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", ["CEST", "Europe/Atlantis", "+02:00", ""])
def test_other_zones_are_refused(zone: str) -> None:
    assert "IANA" in errors(time_zone=zone)["time_zone"]


def test_unknown_fields_and_nested_problems_are_named() -> None:
    found = errors(nickname="x", consent={"email": {"granted": "perhaps", "source": "web"}}, group_ids=["a", "a"])
    assert found["nickname"] == "unknown field"
    assert "consent.email.granted" in found
    assert "repeat" in found["group_ids"]


def test_consent_channels_are_a_closed_set() -> None:
    assert "consent.fax.[key]" in errors(consent={"fax": {"granted": True, "source": "x"}})


def test_attribute_names_and_dates_are_checked() -> None:
    assert "attribute name" in errors(attributes={"1st": 1})["attributes"]
    assert "YYYY-MM-DD" in errors(attributes={"signup_date": "2026-13-01"})["attributes"]


def test_email_keys_ignore_case_and_spaces_but_not_kind() -> None:
    assert email_key("customer", " Ada@Example.COM ") == email_key("customer", "ada@example.com")
    assert email_key("customer", "ada@example.com") != email_key("lead", "ada@example.com")


def test_patch_knows_which_fields_were_sent() -> None:
    patch = ContactPatch.model_validate({"email": None, "status": "Inactive"})
    assert patch.model_fields_set == {"email", "status"}
