"""Create the template's resources in the embedded AWS (moto).

Used by ``make run`` (against moto's server) and by the integration tests
(against moto's in-process mock), so both get exactly the tables, indexes,
queues, topics, buckets, state machines and schedules that ``template.yaml`` defines.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import boto3

from local.template import Template

LOCAL_ROLE_ARN = "arn:aws:iam::123456789012:role/herald-local"


@dataclass
class Provisioned:
    """What was created, for the banner and for tests."""

    tables: list[str] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    state_machines: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    event_buses: list[str] = field(default_factory=list)
    email_identities: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    configuration_sets: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)


def provision(template: Template, only_tables: bool = False) -> Provisioned:
    """Create every resource (idempotent: existing ones are left as they are)."""
    done = Provisioned()
    create_tables(template, done)
    if only_tables:
        return done
    _create_queues(template, done)
    _create_topics(template, done)
    _create_event_buses(template, done)
    _create_state_machines(template, done)
    _create_schedules(template, done)
    _verify_sender_identities(template, done)
    _create_secrets(template, done)
    _create_configuration_sets(template, done)
    _create_buckets(template, done)
    return done


def create_tables(template: Template, done: Provisioned | None = None) -> list[str]:
    """Create the template's DynamoDB tables with their indexes and TTL."""
    client = boto3.client("dynamodb", region_name=template.region)
    existing = set(client.list_tables().get("TableNames", []))
    names = []
    for definition in template.table_definitions().values():
        args = definition["create"]
        name = args["TableName"]
        names.append(name)
        if name in existing:
            continue
        client.create_table(**args)
        ttl = definition.get("ttl")
        if ttl and ttl.get("Enabled"):
            client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )
    if done is not None:
        done.tables = names
    return names


def _create_queues(template: Template, done: Provisioned) -> None:
    client = boto3.client("sqs", region_name=template.region)
    queues = template.of_type("AWS::SQS::Queue")
    # Dead-letter queues first, so redrive policies can name them.
    ordered = sorted(queues, key=lambda lid: "RedrivePolicy" in (queues[lid].get("Properties") or {}))
    for logical_id in ordered:
        props = template.resolve(queues[logical_id].get("Properties") or {})
        attributes: dict[str, Any] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds"):
            if key in props:
                attributes[key] = str(props[key])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        if props.get("FifoQueue"):
            attributes["FifoQueue"] = "true"
        response = client.create_queue(QueueName=template.physical_name(logical_id), Attributes=attributes)  # type: ignore[arg-type]
        done.queues[logical_id] = response["QueueUrl"]


def _create_topics(template: Template, done: Provisioned) -> None:
    client = boto3.client("sns", region_name=template.region)
    for logical_id in template.of_type("AWS::SNS::Topic"):
        client.create_topic(Name=template.physical_name(logical_id))
        done.topics.append(template.physical_name(logical_id))
    _subscribe_queues(template, client)


def _subscribe_queues(template: Template, client: Any) -> None:
    """SNS → SQS subscriptions (SES events reach their queue as in AWS; SNS-wrapped)."""
    for resource in template.of_type("AWS::SNS::Subscription").values():
        if "Condition" in resource and not template.condition(resource["Condition"]):
            continue
        properties = template.resolve(resource.get("Properties", {}))
        if properties.get("Protocol") != "sqs":
            continue  # email subscriptions need a person to confirm; nothing to do locally
        client.subscribe(TopicArn=properties["TopicArn"], Protocol="sqs", Endpoint=properties["Endpoint"])


def _create_state_machines(template: Template, done: Provisioned) -> None:
    client = boto3.client("stepfunctions", region_name=template.region)
    existing = {m["name"] for m in client.list_state_machines().get("stateMachines", [])}
    for machine in template.state_machines():
        if machine.name not in existing:
            client.create_state_machine(
                name=machine.name,
                definition=machine.definition,
                roleArn=LOCAL_ROLE_ARN,
                type="EXPRESS" if machine.type == "EXPRESS" else "STANDARD",
            )
        done.state_machines.append(machine.name)


def _create_event_buses(template: Template, done: Provisioned) -> None:
    client = boto3.client("events", region_name=template.region)
    existing = {bus["Name"] for bus in client.list_event_buses().get("EventBuses", [])}
    for logical_id in template.of_type("AWS::Events::EventBus"):
        name = template.physical_name(logical_id)
        if name not in existing:
            client.create_event_bus(Name=name)
        done.event_buses.append(name)


def _create_schedules(template: Template, done: Provisioned) -> None:
    client = boto3.client("events", region_name=template.region)
    for function in template.functions():
        for event in function.events:
            if event.type not in ("Schedule", "ScheduleV2"):
                continue
            rule = f"{function.logical_id}-{event.name}"
            client.put_rule(
                Name=rule,
                ScheduleExpression=event.properties["Schedule" if event.type == "Schedule" else "ScheduleExpression"],
            )
            client.put_targets(Rule=rule, Targets=[{"Id": function.logical_id, "Arn": function.arn}])
            done.schedules.append(rule)


def _verify_sender_identities(template: Template, done: Provisioned) -> None:
    """Verify every function's ``SENDER_EMAIL`` in the embedded SES, so sending works locally."""
    client = boto3.client("ses", region_name=template.region)
    for function in template.functions():
        address = function.environment.get("SENDER_EMAIL")
        if address and address not in done.email_identities:
            client.verify_email_identity(EmailAddress=address)
            done.email_identities.append(address)


def _create_secrets(template: Template, done: Provisioned) -> None:
    """Secrets with a generated value (``GenerateSecretString``), as CloudFormation would make them."""
    client = boto3.client("secretsmanager", region_name=template.region)
    for logical_id in template.of_type("AWS::SecretsManager::Secret"):
        name = template.physical_name(logical_id)
        try:
            client.describe_secret(SecretId=name)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(Name=name, SecretString=secrets.token_urlsafe(48))
        done.secrets.append(name)


def _create_configuration_sets(template: Template, done: Provisioned) -> None:
    """SES v2 configuration sets (the embedded SES records sends; it publishes no events)."""
    client = boto3.client("sesv2", region_name=template.region)
    for logical_id in template.of_type("AWS::SES::ConfigurationSet"):
        name = template.physical_name(logical_id)
        try:
            client.get_configuration_set(ConfigurationSetName=name)
        except client.exceptions.NotFoundException:
            client.create_configuration_set(ConfigurationSetName=name)
        done.configuration_sets.append(name)


def _create_buckets(template: Template, done: Provisioned) -> None:
    """S3 buckets with their encryption, public access block, ownership and lifecycle rules."""
    client: Any = boto3.client("s3", region_name=template.region)  # the template's dicts, not boto3's TypedDicts
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for logical_id, resource in template.of_type("AWS::S3::Bucket").items():
        name = template.physical_name(logical_id)
        done.buckets.append(name)
        if name in existing:
            continue
        props = template.resolve(resource.get("Properties") or {})
        client.create_bucket(Bucket=name)
        if "BucketEncryption" in props:
            # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault.
            rules = [
                {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in props:
            client.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "OwnershipControls" in props:
            client.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        lifecycle = (props.get("LifecycleConfiguration") or {}).get("Rules") or []
        if lifecycle:
            client.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in lifecycle]}
            )


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule as the S3 API spells it (the expiring kind the template uses)."""
    converted: dict[str, Any] = {"Status": rule.get("Status", "Enabled"), "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        converted["ID"] = rule["Id"]
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    return converted


def table_names_env(template: Template) -> dict[str, Any]:
    """The ``*_TABLE`` variables of the template's Globals, resolved locally."""
    globals_env = template.data.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    resolved = template.resolve(globals_env)
    return {k: v for k, v in resolved.items() if k.endswith("_TABLE")}
