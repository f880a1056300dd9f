"""The template is the only table definition: the pynamodb models must match it."""

from __future__ import annotations

import json

import pytest
from pynamodb.models import Model

from herald.config import ConfigurationError, TableNames
from herald.store.tables import ALL_MODELS
from local.template import default_template

TEMPLATE = default_template()
TABLES = {d["create"]["TableName"]: d["create"] for d in TEMPLATE.table_definitions().values()}
ENV_TABLES = {
    key.removesuffix("_TABLE").lower(): value
    for key, value in TEMPLATE.resolve(TEMPLATE.data["Globals"]["Function"]["Environment"]["Variables"]).items()
    if key.endswith("_TABLE")
}


def key_schema(schema: list[dict[str, str]]) -> dict[str, str]:
    return {k["KeyType"]: k["AttributeName"] for k in schema}


@pytest.mark.parametrize(("field", "model"), ALL_MODELS, ids=[m.__name__ for _, m in ALL_MODELS])
def test_models_match_template_keys_and_indexes(field: str, model: type[Model]) -> None:
    table = TABLES[ENV_TABLES[field]]
    keys = key_schema(table["KeySchema"])
    assert model._hash_keyname == keys["HASH"]
    assert model._range_keyname == keys.get("RANGE")
    declared = table.get("GlobalSecondaryIndexes", []) + table.get("LocalSecondaryIndexes", [])
    template_indexes = {i["IndexName"]: key_schema(i["KeySchema"]) for i in declared}
    for index in model._indexes.values():
        name = index.Meta.index_name
        assert name in template_indexes, f"{model.__name__} uses {name}, which the template lacks"
        assert template_indexes[name]["HASH"] == index._hash_key_attribute().attr_name


def test_every_table_is_passed_to_functions_and_read_by_settings() -> None:
    names = TableNames.from_env({f"{field.upper()}_TABLE": name for field, name in ENV_TABLES.items()})
    assert set(names.model_dump().values()) == set(TABLES)


def test_missing_setting_fails_fast_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="CONTACTS_TABLE"):
        TableNames.from_env({})


def test_intrinsics_resolve_to_local_names() -> None:
    api = next(f for f in TEMPLATE.functions() if f.logical_id == "ApiFunction")
    assert api.environment["CONTACTS_TABLE"] == "ContactsTable"
    assert api.environment["GROUP_DELETION_STATE_MACHINE_ARN"].endswith(":stateMachine:herald-group-deletion-dev")
    assert api.name == "herald-api-dev"
    assert TEMPLATE.resolve({"Fn::Sub": "${AWS::Region}/${Environment}"}) == "us-east-1/dev"
    assert TEMPLATE.condition("HasAlarmEmail") is False


def test_state_machine_definitions_are_fully_substituted() -> None:
    machines = {m.logical_id: json.loads(m.definition) for m in TEMPLATE.state_machines()}
    assert set(machines) == {"GroupDeletionStateMachine", "FlowRunStateMachine"}
    deletion = machines["GroupDeletionStateMachine"]
    task = deletion["States"]["Unassign Members"]
    assert task["Resource"] == "arn:aws:lambda:us-east-1:123456789012:function:herald-group-deletion-dev"
    flow_step = machines["FlowRunStateMachine"]["States"]["Run Step"]
    assert flow_step["Resource"] == "arn:aws:lambda:us-east-1:123456789012:function:herald-flow-step-dev"
    for definition in machines.values():
        for state in definition["States"].values():
            if state["Type"] == "Task":
                assert state["Retry"] and state["TimeoutSeconds"]
    # Deletion catches into its own failure state; a flow step fails at the task, where a redrive resumes it.
    assert all("Catch" in s for s in deletion["States"].values() if s["Type"] == "Task")
    assert "Catch" not in flow_step
    waits = [s for s in machines["FlowRunStateMachine"]["States"].values() if s["Type"] == "Wait"]
    assert waits and all(s["TimestampPath"] == "$.wait_until" for s in waits)


PUBLIC_ROUTES = {
    ("POST", "/forms/{form_id}/submit"),
    ("GET", "/unsubscribe"),
    ("POST", "/unsubscribe"),
    ("GET", "/preferences"),
    ("POST", "/preferences"),
}


def test_no_api_route_is_open_but_form_submission_unsubscribe_and_preferences() -> None:
    api = TEMPLATE.resources["HeraldApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    open_routes = [
        (event.properties["Method"], event.properties["Path"])
        for function in TEMPLATE.functions()
        for event in function.events
        if event.type == "Api" and event.properties.get("Auth", {}).get("Authorizer") == "NONE"
    ]
    assert sorted(open_routes) == sorted(PUBLIC_ROUTES)
    throttled = {(s["ResourcePath"], s["HttpMethod"]) for s in api["MethodSettings"] if "ThrottlingRateLimit" in s}
    for method, path in PUBLIC_ROUTES:
        assert ("/" + path.replace("/", "~1"), method) in throttled
