"""Campaign definitions as stored (``entity_type = campaign`` in the catalog)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pynamodb.models import Model

from herald.errors import NotFound
from herald.store.tables import CampaignRecord
from herald.store.transactions import default_connection

ENTITY = "campaign"
LAUNCHED = "Launched"
STOPPED = "Stopped"


def get(campaign_id: str) -> CampaignRecord | None:
    """A campaign's record (strongly consistent), or None."""
    try:
        return CampaignRecord.get(ENTITY, campaign_id, consistent_read=True)
    except CampaignRecord.DoesNotExist:
        return None


def require(campaign_id: str) -> CampaignRecord:
    """A campaign's record; an unknown id is a 404 naming it."""
    record = get(campaign_id)
    if record is None:
        raise NotFound(f"campaign {campaign_id} does not exist", id=campaign_id)
    return record


def pause(campaign_id: str, by: str, reason: str, at: str, with_items: list[Model]) -> bool:
    """Stop a Launched campaign and put ``with_items`` (catalog records), all in one transaction.

    The condition on ``state`` makes the pause happen once and leaves a campaign
    stopped meanwhile alone (returns False). The version is bumped, so an edit
    read before the pause cannot save the campaign back to ``Launched``;
    ``live_type`` goes, taking it off the tick's ``LiveIndex``.
    """
    table = CampaignRecord.Meta.table_name
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": table,
                "Key": {"entity_type": {"S": ENTITY}, "entity_id": {"S": campaign_id}},
                "UpdateExpression": (
                    "SET #state = :stopped, #stopped_at = :at, #reason = :reason, #by = :by, "
                    "#v = if_not_exists(#v, :zero) + :one REMOVE #live"
                ),
                "ConditionExpression": "#state = :launched",
                "ExpressionAttributeNames": {
                    "#state": "state",
                    "#stopped_at": "stopped_at",
                    "#reason": "stopped_reason",
                    "#by": "paused_by",
                    "#v": "version",
                    "#live": "live_type",
                },
                "ExpressionAttributeValues": {
                    ":stopped": {"S": STOPPED},
                    ":launched": {"S": LAUNCHED},
                    ":at": {"S": at},
                    ":reason": {"S": reason[:1000]},
                    ":by": {"S": by},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
            }
        }
    ]
    items += [{"Put": {"TableName": table, "Item": record.serialize()}} for record in with_items]
    client: Any = default_connection().client
    try:
        client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        codes = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
        cancelled = exc.response.get("Error", {}).get("Code") == "TransactionCanceledException"
        if cancelled and codes[:1] == ["ConditionalCheckFailed"]:
            return False
        raise
    return True
