"""Message history through the API: per contact and per campaign, newest first, paged, filtered."""

from __future__ import annotations

from typing import Any

from herald.store import messages
from tests.harness import Herald
from tests.integration.test_sender import EMAIL, SMS, Clock, _reset, campaign, consent, contact, deliver, send, time_

__all__ = ["_reset", "time_"]  # fixtures used by the tests below

FIELDS = {
    "message_id",
    "campaign_id",
    "contact_id",
    "occurrence",
    "action_index",
    "channel",
    "status",
    "reason",
    "policy_id",
    "priority",
    "queued_at",
    "created_at",
    "sent_at",
    "due_at",
    "provider_message_id",
    "deferrals",
}


def get(h: Herald, path: str) -> Any:
    reply = h.call("GET", path)
    assert reply.status == 200, reply.body
    return reply.body


def pages(h: Herald, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following next_cursor."""
    sep = "&" if "?" in path else "?"
    result: list[list[dict[str, Any]]] = []
    body = get(h, f"{path}{sep}limit={limit}")
    result.append(body["items"])
    while body["next_cursor"] is not None:
        assert len(result) < 20, "paging does not end"
        body = get(h, f"{path}{sep}limit={limit}&cursor={body['next_cursor']}")
        result.append(body["items"])
    return result


def three_campaigns_for_one_contact(h: Herald, time_: Clock) -> None:
    """c1 receives a, then b, then c, one minute apart; c2 receives a."""
    contact(h, "c1")
    contact(h, "c2")
    for name in ("a", "b", "c"):
        campaign(name, [EMAIL])
    deliver(h, {"contact_id": "c1", "sends": [send("a")]}, {"contact_id": "c2", "sends": [send("a")]})
    time_.advance(minutes=1)
    deliver(h, {"contact_id": "c1", "sends": [send("b", priority=7)]})
    time_.advance(minutes=1)
    deliver(h, {"contact_id": "c1", "sends": [send("c")]})


def one_campaign_for_four_contacts(h: Herald, time_: Clock) -> None:
    """news reaches n1..n4 one minute apart; n3 has no email consent, so its message is suppressed."""
    campaign("news", [EMAIL])
    for index in range(1, 5):
        granted = index != 3
        contact(h, f"n{index}", consent={"email": {"granted": granted, "source": "test"}})
    for index in range(1, 5):
        deliver(h, {"contact_id": f"n{index}", "sends": [send("news")]})
        time_.advance(minutes=1)


# --------------------------------------------------------------------------
# Per contact (D7)
# --------------------------------------------------------------------------


def test_a_contacts_messages_come_newest_first_with_every_field(herald: Herald, time_: Clock) -> None:
    three_campaigns_for_one_contact(herald, time_)

    body = get(herald, "/contacts/c1/messages")

    assert [m["campaign_id"] for m in body["items"]] == ["c", "b", "a"]
    assert body["next_cursor"] is None
    assert all(m["contact_id"] == "c1" for m in body["items"])
    newest, middle = body["items"][0], body["items"][1]
    assert set(newest) == FIELDS
    assert newest["message_id"] == messages.message_id("c", "c1", "1", 0)
    assert (newest["status"], newest["channel"], newest["action_index"], newest["occurrence"]) == (
        "sent",
        "email",
        0,
        "1",
    )
    assert newest["sent_at"] == newest["created_at"] == "2026-11-23T12:02:00.000Z"
    assert newest["queued_at"] == "2026-11-23T12:00:00.000Z"
    assert newest["provider_message_id"]
    assert (newest["reason"], newest["due_at"], newest["deferrals"]) == (None, None, 0)
    assert middle["priority"] == 7 and newest["priority"] == 10
    assert get(herald, "/contacts/c2/messages")["items"][0]["campaign_id"] == "a"


def test_a_contacts_messages_page_across_two_pages(herald: Herald, time_: Clock) -> None:
    three_campaigns_for_one_contact(herald, time_)

    result = pages(herald, "/contacts/c1/messages", limit=2)

    assert [len(p) for p in result] == [2, 1]
    assert [m["campaign_id"] for p in result for m in p] == ["c", "b", "a"]


def test_a_contacts_messages_filter_by_status(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1", phone="+447700900123", consent=consent("email"))
    campaign("both", [EMAIL, SMS])
    deliver(herald, {"contact_id": "c1", "sends": [send("both")]})

    suppressed = get(herald, "/contacts/c1/messages?status=suppressed")["items"]
    sent = get(herald, "/contacts/c1/messages?status=sent")["items"]

    assert [(m["channel"], m["reason"]) for m in suppressed] == [("sms", "no_consent")]
    assert [m["channel"] for m in sent] == ["email"]
    assert get(herald, "/contacts/c1/messages?status=failed")["items"] == []
    assert len(get(herald, "/contacts/c1/messages")["items"]) == 2


def test_a_contact_without_messages_has_an_empty_history(herald: Herald, time_: Clock) -> None:
    contact(herald, "quiet")
    assert get(herald, "/contacts/quiet/messages") == {"items": [], "next_cursor": None}


def test_an_unknown_contact_is_404(herald: Herald, time_: Clock) -> None:
    reply = herald.call("GET", "/contacts/ghost/messages")
    assert reply.status == 404 and reply.body["error"] == "not_found"


# --------------------------------------------------------------------------
# Per campaign (D8)
# --------------------------------------------------------------------------


def test_a_campaigns_messages_come_newest_first_and_page(herald: Herald, time_: Clock) -> None:
    one_campaign_for_four_contacts(herald, time_)

    everything = get(herald, "/campaigns/news/messages")["items"]
    result = pages(herald, "/campaigns/news/messages", limit=2)

    assert [m["contact_id"] for m in everything] == ["n4", "n3", "n2", "n1"]
    assert all(m["campaign_id"] == "news" for m in everything)
    assert [[m["contact_id"] for m in p] for p in result] == [["n4", "n3"], ["n2", "n1"]]


def test_a_campaigns_messages_filter_by_status_across_pages(herald: Herald, time_: Clock) -> None:
    one_campaign_for_four_contacts(herald, time_)

    suppressed = get(herald, "/campaigns/news/messages?status=suppressed")["items"]
    sent_pages = pages(herald, "/campaigns/news/messages?status=sent", limit=2)

    assert [(m["contact_id"], m["reason"]) for m in suppressed] == [("n3", "no_consent")]
    assert [m["contact_id"] for m in sent_pages[0]] == ["n4", "n2"]
    assert [m["contact_id"] for p in sent_pages for m in p] == ["n4", "n2", "n1"]
    assert all(m["status"] == "sent" for p in sent_pages for m in p)


def test_a_campaign_only_lists_its_own_messages(herald: Herald, time_: Clock) -> None:
    three_campaigns_for_one_contact(herald, time_)
    assert sorted(m["contact_id"] for m in get(herald, "/campaigns/a/messages")["items"]) == ["c1", "c2"]
    assert [m["contact_id"] for m in get(herald, "/campaigns/b/messages")["items"]] == ["c1"]


def test_an_unknown_campaign_is_404(herald: Herald, time_: Clock) -> None:
    reply = herald.call("GET", "/campaigns/ghost/messages")
    assert reply.status == 404 and reply.body["error"] == "not_found"


# --------------------------------------------------------------------------
# Bad requests
# --------------------------------------------------------------------------


def test_a_bad_cursor_is_400_naming_cursor(herald: Herald, time_: Clock) -> None:
    three_campaigns_for_one_contact(herald, time_)
    other = get(herald, "/contacts/c1/messages?limit=1")["next_cursor"]
    assert other is not None

    for path in (
        "/contacts/c1/messages?cursor=not-a-cursor!!",
        "/campaigns/a/messages?cursor=not-a-cursor!!",
        f"/contacts/c2/messages?cursor={other}",  # another contact's listing
        f"/contacts/c1/messages?status=sent&cursor={other}",  # another filter
        f"/campaigns/a/messages?cursor={other}",  # another endpoint
    ):
        reply = herald.call("GET", path)
        assert reply.status == 400, (path, reply.body)
        assert reply.body["field"] == "cursor", path


def test_a_bad_status_or_limit_is_422_naming_it(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    campaign("a", [EMAIL])
    for path, field in (
        ("/contacts/c1/messages?status=delivered", "status"),
        ("/campaigns/a/messages?status=bounced", "status"),
        ("/contacts/c1/messages?limit=0", "limit"),
        ("/campaigns/a/messages?limit=101", "limit"),
    ):
        reply = herald.call("GET", path)
        assert reply.status == 422, (path, reply.body)
        assert [e["field"] for e in reply.body["errors"]] == [field], path
