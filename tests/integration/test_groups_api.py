"""Customer groups against moto: CRUD, assignment, in-use refusal, forced deletion on Step Functions."""

from __future__ import annotations

import boto3
import pytest

from herald.groups import service as groups
from local.functions import FunctionError
from tests.harness import Herald, load_event


def make_group(herald: Herald, group_id: str = "vip", name: str = "VIP Customers") -> None:
    reply = herald.call("POST", "/groups", {"group_id": group_id, "name": name})
    assert reply.status == 201, reply.body


def make_customer(herald: Herald, contact_id: str, **fields: object) -> None:
    reply = herald.call("POST", "/contacts", {"contact_id": contact_id, "kind": "customer", **fields})
    assert reply.status == 201, reply.body


def test_create_get_list_and_rename(herald: Herald) -> None:
    assert herald.send(load_event("api/create-group")).status == 201
    make_group(herald, "retail", "Retail Customers")
    listed = herald.call("GET", "/groups").body["items"]
    renamed = herald.call("PATCH", "/groups/vip", {"name": "VIP Members"}, {"If-Match": '"1"'})
    assert [g["group_id"] for g in listed] == ["retail", "vip"]
    assert renamed.status == 200
    assert renamed.body["name"] == "VIP Members"
    assert renamed.body["version"] == 2
    assert herald.call("GET", "/groups/vip").body["description"] == "Top 5% by lifetime value"


def test_group_names_are_unique_and_freed_by_rename(herald: Herald) -> None:
    make_group(herald, "vip", "VIP")
    clash = herald.call("POST", "/groups", {"name": "  vip "})
    assert clash.status == 409
    assert clash.body["existing_group_id"] == "vip"
    herald.call("PATCH", "/groups/vip", {"name": "Gold"})
    assert herald.call("POST", "/groups", {"group_id": "vip2", "name": "VIP"}).status == 201
    assert herald.call("PATCH", "/groups/vip2", {"name": "gold"}).status == 409


def test_stale_rename_is_409(herald: Herald) -> None:
    make_group(herald)
    herald.call("PATCH", "/groups/vip", {"description": "first"})
    stale = herald.call("PATCH", "/groups/vip", {"description": "second"}, {"If-Match": '"1"'})
    assert stale.status == 409
    assert stale.body["current_version"] == 2


def test_unknown_group_is_404(herald: Herald) -> None:
    assert herald.call("GET", "/groups/nope").status == 404
    assert herald.call("PATCH", "/groups/nope", {"name": "x"}).status == 404
    assert herald.call("DELETE", "/groups/nope").status == 404
    assert herald.call("POST", "/groups/nope/members", {"contact_ids": ["c1"]}).status == 404


def test_assign_and_unassign_one_customer(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1")
    assigned = herald.call("PUT", "/contacts/c1/groups/vip")
    again = herald.call("PUT", "/contacts/c1/groups/vip")
    assert assigned.status == 200
    assert assigned.body["group_ids"] == ["vip"]
    assert again.body["version"] == assigned.body["version"]  # no-op, no new version
    assert herald.call("GET", "/groups/vip").body["member_count"] == 1
    assert herald.call("DELETE", "/contacts/c1/groups/vip").body["group_ids"] == []
    assert herald.call("DELETE", "/contacts/c1/groups/vip").status == 404
    assert herald.call("GET", "/groups/vip").body["member_count"] == 0
    assert herald.call("PUT", "/contacts/c1/groups/ghost").status == 422


def test_bulk_assignment_reports_each_contact(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1")
    make_customer(herald, "c2", group_ids=["vip"])
    herald.call("POST", "/contacts", {"contact_id": "l1", "kind": "lead"})
    reply = herald.call("POST", "/groups/vip/members", {"contact_ids": ["c1", "c2", "l1", "ghost"]})
    outcomes = {r["contact_id"]: r["outcome"] for r in reply.body["results"]}
    assert outcomes == {"c1": "assigned", "c2": "unchanged", "l1": "rejected", "ghost": "not_found"}
    removed = herald.call("POST", "/groups/vip/members/remove", {"contact_ids": ["c1", "l1"]})
    assert {r["contact_id"]: r["outcome"] for r in removed.body["results"]} == {"c1": "unassigned", "l1": "unchanged"}
    assert herald.call("GET", "/groups/vip").body["member_count"] == 1


def test_bulk_assignment_over_1000_is_413(herald: Herald) -> None:
    make_group(herald)
    reply = herald.call("POST", "/groups/vip/members", {"contact_ids": [f"c{i}" for i in range(1001)]})
    assert reply.status == 413


def test_members_follow_status_changes(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1", group_ids=["vip"])
    make_customer(herald, "c2", group_ids=["vip"], status="Inactive")
    herald.call("PATCH", "/contacts/c1", {"status": "Inactive"})
    active = herald.call("GET", "/groups/vip/members?status=Active").body["items"]
    inactive = herald.call("GET", "/groups/vip/members?status=Inactive").body["items"]
    assert active == []
    assert sorted(c["contact_id"] for c in inactive) == ["c1", "c2"]


def test_delete_unused_group_is_204(herald: Herald) -> None:
    make_group(herald)
    assert herald.call("DELETE", "/groups/vip").status == 204
    assert herald.call("GET", "/groups/vip").status == 404
    assert herald.call("POST", "/groups", {"name": "VIP Customers"}).status == 201  # name freed


def test_delete_is_refused_while_customers_use_the_group(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1", group_ids=["vip"])
    reply = herald.call("DELETE", "/groups/vip")
    assert reply.status == 409
    assert reply.body["member_count"] == 1
    assert herald.call("GET", "/groups/vip").status == 200


def test_delete_is_refused_while_campaigns_use_the_group(herald: Herald) -> None:
    make_group(herald)
    groups.add_reference("vip", "campaign#spring-sale")
    reply = herald.call("DELETE", "/groups/vip")
    assert reply.status == 409
    assert reply.body["used_by"] == ["campaign#spring-sale"]
    groups.remove_reference("vip", "campaign#spring-sale")
    assert herald.call("DELETE", "/groups/vip").status == 204


def test_forced_delete_unassigns_members_through_the_state_machine(herald: Herald) -> None:
    # Given a group with members and a campaign using it
    make_group(herald)
    for i in range(7):
        make_customer(herald, f"c{i}", group_ids=["vip"])
    groups.add_reference("vip", "campaign#spring-sale")
    # When it is deleted with force
    reply = herald.send(load_event("api/delete-group-forced"))
    # Then it is marked Deleting at once and refuses new members...
    assert reply.status == 202
    assert reply.body["state"] == "Deleting"
    assert reply.body["detached"] == ["campaign#spring-sale"]
    # ...and the state machine unassigns everyone, then deletes it
    [execution] = herald.wait_for_executions()
    assert execution["status"] == "SUCCEEDED"
    history = boto3.client("stepfunctions").get_execution_history(executionArn=execution["executionArn"])["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    assert entered[0] == "Unassign Members"
    assert entered[-1] == "Group Deleted"
    assert herald.call("GET", "/groups/vip").status == 404
    assert all(herald.call("GET", f"/contacts/c{i}").body["group_ids"] == [] for i in range(7))


def test_a_deleting_group_takes_no_new_members(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1", group_ids=["vip"])
    make_customer(herald, "c2")
    started: list[str] = []
    # A deletion that has been marked but whose state machine has not run yet:
    groups.delete_group("vip", True, lambda group_id, reason: started.append(group_id) or "execution")
    assert started == ["vip"]
    assert herald.call("GET", "/groups/vip").body["state"] == "Deleting"
    assert herald.call("PUT", "/contacts/c2/groups/vip").status == 422
    assert herald.call("POST", "/groups/vip/members", {"contact_ids": ["c2"]}).status == 409


def test_group_deletion_steps_on_their_sample_events(herald: Herald) -> None:
    make_group(herald)
    make_customer(herald, "c1", group_ids=["vip"])
    # Not marked for deletion: the steps change nothing
    assert herald.host.invoke("GroupDeletionFunction", load_event("group_deletion/unassign-members"))["more"] is False
    assert herald.host.invoke("GroupDeletionFunction", load_event("group_deletion/finish-deletion")) == {
        "outcome": "not_deleting"
    }
    assert herald.call("GET", "/groups/vip").body["member_count"] == 1
    # Marked: unassign, then finish (and finishing again is harmless)
    groups.delete_group("vip", True, lambda group_id, reason: "execution")
    progress = herald.host.invoke("GroupDeletionFunction", load_event("group_deletion/unassign-members"))
    assert progress == {"unassigned": 1, "failed": 0, "more": False}
    assert herald.host.invoke("GroupDeletionFunction", load_event("group_deletion/finish-deletion")) == {
        "outcome": "deleted"
    }
    assert herald.host.invoke("GroupDeletionFunction", load_event("group_deletion/finish-deletion")) == {
        "outcome": "deleted"
    }


def test_a_malformed_task_is_rejected(herald: Herald) -> None:
    with pytest.raises(FunctionError, match="action"):
        herald.host.invoke("GroupDeletionFunction", {"action": "explode", "group_id": "vip"})


def test_a_rename_never_overwrites_member_counts_or_the_deletion_state(herald: Herald) -> None:
    from herald import clock
    from herald.store import groups as store
    from herald.store.transactions import commit_units

    make_group(herald)
    stale = store.get("vip")
    assert stale is not None
    # A member joins after the rename read the group...
    make_customer(herald, "c1", group_ids=["vip"])
    renamed = stale.model_copy(update={"name": "VIP Members", "updated_at": clock.now_iso()})
    # ...and the rename, written from that stale read, still lands without touching the count
    assert not commit_units([store.update_unit(stale, renamed)]).failures
    group = herald.call("GET", "/groups/vip").body
    assert (group["name"], group["member_count"]) == ("VIP Members", 1)
    assert herald.call("DELETE", "/groups/vip").status == 409  # still in use
    # A group being deleted cannot be renamed, and an unforced delete does not restart it
    groups.delete_group("vip", True, lambda group_id, reason: "execution")
    assert herald.call("PATCH", "/groups/vip", {"name": "Back"}).status == 409
    refused = herald.call("DELETE", "/groups/vip")
    assert refused.status == 409
    assert refused.body["state"] == "Deleting"
    assert herald.call("GET", "/groups/vip").body["state"] == "Deleting"


def test_losing_members_never_creates_a_phantom_group(herald: Herald) -> None:
    from herald.store import contacts as contact_store
    from herald.store.transactions import commit_units

    make_customer(herald, "c1")
    contact = contact_store.get("c1")
    assert contact is not None
    dangling = contact.model_copy(update={"group_ids": ["ghost"]})
    report = commit_units([contact_store.change_unit(0, dangling, contact)])  # "remove" a group that never existed
    assert report.failures[0].labels == ["group:ghost"]
    assert herald.call("GET", "/groups/ghost").status == 404


def test_import_rows_naming_one_contact_twice_are_reported_as_repeats(herald: Herald) -> None:
    make_customer(herald, "c1", email="one@example.com")
    rows = [
        {"contact_id": "c1", "kind": "customer", "first_name": "By id"},
        {"kind": "customer", "email": "one@example.com", "first_name": "By email"},
    ]
    reply = herald.call("POST", "/contacts/import", {"contacts": rows})
    assert [r["outcome"] for r in reply.body["rows"]] == ["updated", "rejected"]
    assert reply.body["rows"][1]["errors"] == [{"field": "row", "problem": "repeats row 0 (same contact)"}]
