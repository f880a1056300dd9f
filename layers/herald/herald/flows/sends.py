"""Flow step sends through the campaign sender (issue 6).

A flow's message steps (email, sms, push, web service, award points, update
stage, cross-campaign messages) are not sent by the step runner: it queues one
delivery message per contact (:func:`delivery_message`) on the sender's
queue, and the sender (:mod:`herald.delivery.sender`) settles it like a
campaign send — consent, suppressions, contact policy and priority, the claim
that makes a redelivered message send once, points and stage applied once.

The sender needs a campaign to send; :func:`step_campaign` gives it one: a
*synthetic, unsaved* :class:`CampaignRecord` (``entity_type = flow``, id = the
flow's id) whose only action is the step's, with the category, group,
unsubscribe settings and priority of the flow version the contact walks. Its
state is ``Launched`` while the flow is active and ``Stopped`` otherwise, so a
paused flow's sends are held (re-checked hourly, expired after 72 hours) by
the sender's hold-while-stopped logic, exactly like a stopped campaign's.
"""

from __future__ import annotations

from typing import Any

from herald import clock
from herald.campaigns.model import State
from herald.store import campaigns as campaign_store
from herald.store import flows as flow_store
from herald.store import messages
from herald.store.tables import FLOW_ENTITY, CampaignRecord

ACTIVE = "active"
# The settings a synthetic campaign carries over from the flow version.
CARRIED_SETTINGS = ("category", "campaign_group", "unsubscribe", "priority")
CROSS_CAMPAIGN_PREFIX = "cross_campaign_"

# Versions never change once written: read each once per process.
_versions: dict[tuple[str, int], dict[str, Any] | None] = {}


def clear_cache() -> None:
    _versions.clear()


def version_spec(flow_id: str, version: int) -> dict[str, Any] | None:
    """A flow version's ``{"settings", "graph"}`` (cached per process; immutable), or None if absent."""
    key = (flow_id, version)
    if key not in _versions:
        record = flow_store.get_version(flow_id, version)
        if record is None:
            return None  # not cached: a version being written may appear
        _versions[key] = dict(record.spec)
    return _versions[key]


def find_step(spec: dict[str, Any], step_id: str) -> dict[str, Any] | None:
    steps = (spec.get("graph") or {}).get("steps") or []
    return next((s for s in steps if isinstance(s, dict) and s.get("id") == step_id), None)


def step_action(step: dict[str, Any]) -> dict[str, Any] | None:
    """The campaign action a message step sends (None: the step sends nothing, or names a gone campaign)."""
    kind = str(step.get("type") or "")
    if kind == "email":
        return {"type": "email", "subject": step["subject"], "body": step["body"], "track_engagement": True}
    if kind == "sms":
        return {"type": "sms", "text": step["text"]}
    if kind == "push":
        return {"type": "push", "title": step.get("title") or "", "body": step["body"]}
    if kind == "web_service":
        action = {"type": "webhook", "url": step["url"]}
        if step.get("body") is not None:
            action["body"] = step["body"]
        return action
    if kind == "award_points":
        return {"type": "points", "points": step["points"]}
    if kind == "update_stage":
        return {"type": "stage", "stage": step["stage"]}
    if kind.startswith(CROSS_CAMPAIGN_PREFIX):
        return referenced_action(str(step.get("campaign_id") or ""), kind.removeprefix(CROSS_CAMPAIGN_PREFIX))
    return None


def referenced_action(campaign_id: str, channel: str) -> dict[str, Any] | None:
    """The referenced campaign's first action on ``channel`` (its content, sent as the flow's), or None."""
    record = campaign_store.get(campaign_id) if campaign_id else None
    if record is None:
        return None
    for action in record.spec.get("actions") or []:
        if isinstance(action, dict) and action.get("type") == channel:
            return dict(action)
    return None


def step_campaign(flow_id: str, version: int, step_id: str) -> CampaignRecord | None:
    """The synthetic campaign the sender sends a flow step as; None if the flow, version or step is gone.

    A cross-campaign step whose campaign (or its action on the channel) is gone
    gives a campaign without actions: the sender records ``no_actions``.
    """
    flow = flow_store.get(flow_id)
    spec = version_spec(flow_id, version) if flow is not None else None
    step = find_step(spec, step_id) if spec is not None else None
    if flow is None or spec is None or step is None:
        return None
    action = step_action(step)
    settings = spec.get("settings") or {}
    carried = {name: settings[name] for name in CARRIED_SETTINGS if settings.get(name) is not None}
    now = clock.now_iso()
    return CampaignRecord(
        FLOW_ENTITY,
        flow_id,
        name=str(flow.name),
        spec={"name": str(flow.name), "actions": [action] if action is not None else [], **carried},
        state=State.LAUNCHED.value if flow.status == ACTIVE else State.STOPPED.value,
        created_at=str(flow.created_at or now),
        updated_at=str(flow.updated_at or now),
    )


def step_message_id(flow_id: str, contact_id: str, occurrence: str) -> str:
    """The message id of a flow step's send: deterministic, so a retried step task never sends twice."""
    return messages.message_id(flow_id, contact_id, occurrence, 0)


def delivery_message(
    flow_id: str,
    version: int,
    step_id: str,
    contact_id: str,
    occurrence: str,
    priority: int,
    queued_at: str,
) -> dict[str, Any]:
    """The delivery queue message of one contact's step send (``herald.delivery.sender.DeliveryIn``)."""
    return {
        "contact_id": contact_id,
        "sends": [
            {
                "campaign_id": flow_id,
                "occurrence": occurrence,
                "priority": priority,
                "queued_at": queued_at,
                "flow": {"version": version, "step_id": step_id},
            }
        ],
    }
