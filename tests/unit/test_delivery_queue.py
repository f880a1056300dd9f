"""The delivery queue message: one contact's sends, by priority, each once, in messages of at most 100."""

from __future__ import annotations

from herald.delivery.queue import MAX_SENDS_PER_MESSAGE, delivery_messages


def send(campaign_id: str, priority: int, occurrence: str = "1") -> dict[str, object]:
    return {
        "contact_id": "c",
        "campaign_id": campaign_id,
        "occurrence": occurrence,
        "priority": priority,
        "queued_at": "t",
    }


def test_sends_are_ordered_by_priority_and_deduplicated() -> None:
    [message] = delivery_messages("c", [send("login", 40), send("sale", 10), send("sale", 10), send("bday", 20)])
    assert message["contact_id"] == "c"
    assert [s["campaign_id"] for s in message["sends"]] == ["sale", "bday", "login"]
    assert all("contact_id" not in s for s in message["sends"])


def test_many_sends_are_split_into_messages_the_sender_accepts() -> None:
    sends = [send(f"c{i:03d}", 10) for i in range(2 * MAX_SENDS_PER_MESSAGE + 1)]
    messages = delivery_messages("c", sends + sends[:5])  # a re-queued outbox repeats some
    assert [len(m["sends"]) for m in messages] == [MAX_SENDS_PER_MESSAGE, MAX_SENDS_PER_MESSAGE, 1]
