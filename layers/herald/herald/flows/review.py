"""Preview one step of a flow for one contact: what it would send, or where it would go, and why.

Seed 004 lets the operator preview a cross-campaign message before reusing it;
the brief asks Herald to explain, for any contact and flow step, why they would
or would not be reached. Nothing is written.
"""

from __future__ import annotations

from typing import Any

from herald import clock
from herald.campaigns import eligibility
from herald.campaigns.targeting import spec_targets
from herald.delivery.render import personalisation, render
from herald.delivery.sender import suppression_reason
from herald.errors import NotFound
from herald.flows.definition import own_campaign
from herald.flows.sends import CROSS_CAMPAIGN_PREFIX, find_step, step_action
from herald.rules.compiler import compile_rule
from herald.rules.model import parse_rule
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store import flows as store
from herald.store import suppressions as suppression_store
from herald.store.tables import ContactRecord

RENDERED_FIELDS = ("subject", "body", "text", "title")


def preview(flow_id: str, step_id: str, contact_id: str) -> dict[str, Any]:
    """The step of the flow's current version, for ``contact_id`` now."""
    flow = store.get(flow_id)
    if flow is None:
        raise NotFound(f"flow {flow_id} does not exist", id=flow_id)
    step = find_step(flow.spec, step_id)
    if step is None:
        raise NotFound(f"flow {flow_id} has no step {step_id} in version {flow.current_version}", id=step_id)
    try:
        record = ContactRecord.get(contact_id, consistent_read=True)
    except ContactRecord.DoesNotExist as exc:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id) from exc
    settings = flow.spec["settings"]
    result: dict[str, Any] = {
        "flow_id": flow_id,
        "version": int(flow.current_version),
        "step_id": step_id,
        "type": step["type"],
        "contact_id": contact_id,
        "in_flow_segments": sorted(set(settings["segments"]) & set(record.segment_ids or ())),
    }
    if step["type"] == "condition":
        rule = parse_rule(own_campaign(step["rule"], flow_id))
        raw = ContactRecord._get_connection().get_item(contact_id, consistent_read=True).get("Item") or {}
        branch = "yes" if compile_rule(rule, clock.now())(raw) else "no"
        result["branch"] = {"taken": branch, "next": step.get(branch)}
        return result
    if step["type"].startswith(CROSS_CAMPAIGN_PREFIX):
        result["campaign"] = _qualification(step["campaign_id"], record)
    action = step_action(step)
    if action is not None:
        result["action"] = _rendered(action, flow_id, str(flow.name), settings, record)
    return result


def _qualification(campaign_id: str, record: ContactRecord) -> dict[str, Any]:
    """Whether the contact qualifies for the reused campaign now (else the step is skipped)."""
    campaign = campaign_store.get(campaign_id)
    if campaign is None:
        return {"id": campaign_id, "exists": False, "qualifies": False}
    blockers = eligibility.blockers(campaign.spec, campaign.state, clock.now())
    targeted = record.contact_id in spec_targets(campaign.spec, [record])
    return {
        "id": campaign_id,
        "exists": True,
        "state": campaign.state,
        "targeted": targeted,
        "blockers": blockers,
        "qualifies": targeted and not blockers,
    }


def _rendered(
    action: dict[str, Any], flow_id: str, name: str, settings: dict[str, Any], record: ContactRecord
) -> dict[str, Any]:
    contact = contact_store.from_record(record)
    person = personalisation(contact.model_dump(mode="json"))
    view: dict[str, Any] = {"type": action["type"]}
    fields = {k: v for k, v in action.items() if k in RENDERED_FIELDS and isinstance(v, str)}
    if fields:
        view["rendered"] = {k: render(v, person, {"id": flow_id, "name": name}) for k, v in fields.items()}
    if action["type"] in ("email", "sms", "push"):
        suppressed = suppression_store.of_contact(contact.contact_id)
        reason = suppression_reason(
            contact, action["type"], suppressed, flow_id, settings.get("category"), settings.get("campaign_group")
        )
        view["held_back"] = reason
    else:
        view["would_apply"] = {k: v for k, v in action.items() if k != "type"}
    return view
