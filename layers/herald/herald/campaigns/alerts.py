"""In-Campaign % alerts (seed 001): an alert record, and an SNS message for subscribers.

In-Campaign % = contacts in the campaign ÷ contacts currently matching its
targeting. When a tick finds it below the campaign's expected level (default
90 %), an alert is recorded (``GET /campaigns/{id}/alerts``) and published to
the alerts topic with a ``campaign_id`` message attribute; each subscriber's
email subscription filters on it, so people hear only about their campaigns.
An alert is raised when the figure crosses below the level, not on every
tick; a recovery above it is recorded too.
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from herald.campaigns.model import CampaignFields
from herald.store import stats
from herald.store.tables import AlertRecord, CampaignRecord

BELOW = "in_campaign_below_expected"
RECOVERED = "in_campaign_recovered"


class Notifier:
    """Publishes alerts to the SNS topic and keeps each campaign's email subscriptions."""

    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        self.topic_arn = topic_arn
        self._client = client

    def _sns(self) -> Any:
        if self._client is None:
            self._client = boto3.client("sns")
        return self._client

    def publish(self, campaign_id: str, subject: str, message: dict[str, Any]) -> None:
        self._sns().publish(
            TopicArn=self.topic_arn,
            Subject=subject[:100],
            Message=json.dumps(message, indent=2),
            MessageAttributes={"campaign_id": {"DataType": "String", "StringValue": campaign_id}},
        )

    def sync_subscribers(self, campaign_id: str, emails: list[str]) -> None:
        """Subscribe new addresses (filtered to this campaign) and drop removed ones."""
        sns = self._sns()
        current: dict[str, str] = {}
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=self.topic_arn):
            for sub in page.get("Subscriptions", []):
                arn = sub["SubscriptionArn"]
                if sub.get("Protocol") != "email" or not arn.startswith("arn:"):
                    continue
                attributes = sns.get_subscription_attributes(SubscriptionArn=arn).get("Attributes", {})
                policy = json.loads(attributes.get("FilterPolicy") or "{}")
                if policy.get("campaign_id") == [campaign_id]:
                    current[sub["Endpoint"].lower()] = arn
        wanted = {email.lower() for email in emails}
        for email in sorted(wanted - set(current)):
            sns.subscribe(
                TopicArn=self.topic_arn,
                Protocol="email",
                Endpoint=email,
                Attributes={"FilterPolicy": json.dumps({"campaign_id": [campaign_id]})},
            )
        for email in sorted(set(current) - wanted):
            sns.unsubscribe(SubscriptionArn=current[email])


def check_in_campaign(
    record: CampaignRecord,
    fields: CampaignFields,
    pct: float,
    figures: Any,
    now_iso: str,
    notifier: Notifier | None,
) -> int:
    """Raise or clear the alert for this tick's In-Campaign %; returns writes made."""
    subject = f"campaign#{record.entity_id}"
    alerting = bool(stats.read_stats(subject, "total").get("total", {}).get("alerting"))
    below = pct < fields.expected_in_campaign_pct
    if below == alerting:
        return 0
    kind = BELOW if below else RECOVERED
    numbers = {
        "in_campaign_pct": pct,
        "expected_pct": fields.expected_in_campaign_pct,
        "matching": figures.matching,
        "in_campaign": figures.active,
        "not_previously_treated": figures.not_previously_treated,
    }
    if below:
        message = (
            f"In-Campaign % of '{fields.name}' is {pct:.1f}%, below the expected {fields.expected_in_campaign_pct:g}%: "
            f"{figures.active} of {figures.matching} matching contacts are in the campaign. Check the contacts "
            "left out (previously treated, exited, or enrolments failing) and the campaign's targeting."
        )
    else:
        message = (
            f"In-Campaign % of '{fields.name}' is back to {pct:.1f}% (expected {fields.expected_in_campaign_pct:g}%)."
        )
    # Publish, then record, then flip the flag: a failure anywhere leaves the flag as it
    # was, so the next tick raises the alert again rather than never.
    if notifier is not None:
        notifier.publish(
            record.entity_id,
            f"Herald: {fields.name} In-Campaign % {'below expected' if below else 'recovered'}",
            {"campaign_id": record.entity_id, "kind": kind, "message": message, "figures": numbers, "at": now_iso},
        )
    key = f"alert#campaign#{record.entity_id}"
    AlertRecord(key, f"{now_iso}#{kind}", kind=kind, message=message, figures=numbers, at=now_iso).save()
    stats.add_stats(subject, "total", {}, {"alerting": 1 if below else 0})
    return 2


def alerts_of(campaign_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The campaign's alerts, newest first."""
    records = AlertRecord.query(f"alert#campaign#{campaign_id}", scan_index_forward=False, limit=limit)
    return [{"kind": r.kind, "message": r.message, "figures": r.figures, "at": r.at} for r in records]
