"""Read ``template.yaml`` the way the embedded runtime needs it.

The template is the only description of Herald's resources. This module
loads it (with CloudFormation's short-form tags), resolves the intrinsic
functions the template uses against local physical names, and exposes typed
views of tables, queues, topics, state machines and functions with their
event sources. Tests create their tables through the same views, so local
and deployed keys never drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGION = "us-east-1"
ACCOUNT = "123456789012"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that understands ``!Ref``, ``!GetAtt``, ``!Sub`` and friends."""


def _tag_constructor(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag_constructor)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML file into plain data."""
    with path.open() as handle:
        data = yaml.load(handle, Loader=_CfnLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a template")
    return data


@dataclass
class EventSource:
    """A function's trigger: an SQS queue, a schedule, or an API route."""

    name: str
    type: str
    properties: dict[str, Any]


@dataclass
class FunctionSpec:
    """A function as the runtime runs it."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout: int
    environment: dict[str, str]
    events: list[EventSource] = field(default_factory=list)


@dataclass
class StateMachineSpec:
    """A state machine with its definition already substituted."""

    logical_id: str
    name: str
    arn: str
    definition: str
    type: str


class Template:
    """A loaded template with intrinsics resolved for the embedded AWS."""

    def __init__(self, path: Path, region: str = REGION, account: str = ACCOUNT) -> None:
        self.path = path
        self.root = path.parent
        self.region = region
        self.account = account
        self.data = load_yaml(path)
        self.resources: dict[str, dict[str, Any]] = self.data.get("Resources", {})
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in self.data.get("Parameters", {}).items()}
        self.conditions = self.data.get("Conditions", {})
        self._names = {logical_id: self._physical_name(logical_id) for logical_id in self.resources}

    # -- resources by type -------------------------------------------------

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Resources of one CloudFormation type, by logical id."""
        return {k: v for k, v in self.resources.items() if v.get("Type") == resource_type}

    def table_definitions(self) -> dict[str, dict[str, Any]]:
        """``create_table`` arguments per table logical id (names resolved)."""
        tables = {}
        for logical_id, resource in self.of_type("AWS::DynamoDB::Table").items():
            props = self.resolve(resource.get("Properties", {}))
            args: dict[str, Any] = {
                "TableName": self._names[logical_id],
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
                "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
            }
            if props.get("GlobalSecondaryIndexes"):
                args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            if props.get("LocalSecondaryIndexes"):
                args["LocalSecondaryIndexes"] = props["LocalSecondaryIndexes"]
            if props.get("StreamSpecification"):
                args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
            tables[logical_id] = {"create": args, "ttl": props.get("TimeToLiveSpecification")}
        return tables

    def functions(self) -> list[FunctionSpec]:
        """Every ``AWS::Serverless::Function`` with its merged Globals."""
        globals_ = self.data.get("Globals", {}).get("Function", {})
        specs = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            props = resource.get("Properties", {})
            env = {
                **self.resolve(globals_.get("Environment", {}).get("Variables", {})),
                **self.resolve(props.get("Environment", {}).get("Variables", {})),
            }
            events = [
                EventSource(name, spec["Type"], self.resolve(spec.get("Properties", {})))
                for name, spec in props.get("Events", {}).items()
            ]
            specs.append(
                FunctionSpec(
                    logical_id=logical_id,
                    name=self._names[logical_id],
                    arn=self.attribute(logical_id, "Arn"),
                    code_dir=(self.root / props["CodeUri"]).resolve(),
                    handler=props.get("Handler", "app.lambda_handler"),
                    timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
                    environment={k: str(v) for k, v in env.items()},
                    events=events,
                )
            )
        return specs

    def state_machines(self) -> list[StateMachineSpec]:
        """Every ``AWS::Serverless::StateMachine`` with ``DefinitionSubstitutions`` applied."""
        machines = []
        for logical_id, resource in self.of_type("AWS::Serverless::StateMachine").items():
            props = resource.get("Properties", {})
            definition = (self.root / props["DefinitionUri"]).read_text()
            substitutions = self.resolve(props.get("DefinitionSubstitutions", {}))
            for key, value in substitutions.items():
                definition = definition.replace("${" + key + "}", str(value))
            unresolved = re.findall(r"\$\{(\w+)\}", definition)
            if unresolved:
                raise ValueError(f"{logical_id}: no substitution for {', '.join(sorted(set(unresolved)))}")
            machines.append(
                StateMachineSpec(
                    logical_id=logical_id,
                    name=self._names[logical_id],
                    arn=self.attribute(logical_id, "Arn"),
                    definition=definition,
                    type=props.get("Type", "STANDARD"),
                )
            )
        return machines

    # -- intrinsic functions -------------------------------------------------

    def physical_name(self, logical_id: str) -> str:
        """The local physical name of a resource."""
        return self._names[logical_id]

    def _physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        props = resource.get("Properties", {}) or {}
        for key in (
            "FunctionName",
            "Name",
            "TopicName",
            "QueueName",
            "TableName",
            "LayerName",
            "LogGroupName",
            "BucketName",
        ):
            if key in props:
                try:
                    return str(self._resolve_value(props[key], allow_refs=False))
                except KeyError:
                    break
        if resource.get("Type") == "AWS::S3::Bucket":
            # CloudFormation names an unnamed bucket after the stack; S3 names are lower case.
            return f"herald-local-{logical_id.lower()}"
        return logical_id

    def ref(self, name: str) -> str:
        """``!Ref``: parameters, pseudo parameters and resources."""
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "herald-local",
            "AWS::Partition": "aws",
            "AWS::NoValue": "",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resource_type = self.resources[name]["Type"]
        physical = self._names[name]
        if resource_type == "AWS::SQS::Queue":
            return f"http://sqs.{self.region}.localhost/{self.account}/{physical}"
        if resource_type in (
            "AWS::SNS::Topic",
            "AWS::SecretsManager::Secret",
            "AWS::Serverless::StateMachine",
            "AWS::Serverless::LayerVersion",
        ):
            return self.attribute(name, "Arn")
        return physical

    def attribute(self, logical_id: str, attribute: str) -> str:
        """``!GetAtt``: the attributes the template uses."""
        resource_type = self.resources[logical_id]["Type"]
        physical = self._names[logical_id]
        if attribute in ("Name", "QueueName", "TopicName"):
            return physical
        arn_formats = {
            "AWS::Serverless::Function": "arn:aws:lambda:{r}:{a}:function:{n}",
            "AWS::SQS::Queue": "arn:aws:sqs:{r}:{a}:{n}",
            "AWS::SNS::Topic": "arn:aws:sns:{r}:{a}:{n}",
            "AWS::Serverless::StateMachine": "arn:aws:states:{r}:{a}:stateMachine:{n}",
            "AWS::DynamoDB::Table": "arn:aws:dynamodb:{r}:{a}:table/{n}",
            "AWS::Logs::LogGroup": "arn:aws:logs:{r}:{a}:log-group:{n}",
            "AWS::Serverless::LayerVersion": "arn:aws:lambda:{r}:{a}:layer:{n}:1",
            # Real secret ARNs end in a random suffix; the name works wherever the ARN does.
            "AWS::SecretsManager::Secret": "{n}",
        }
        if attribute == "Arn" and resource_type in arn_formats:
            return arn_formats[resource_type].format(r=self.region, a=self.account, n=physical)
        if attribute == "StreamArn" and resource_type == "AWS::DynamoDB::Table":
            # Locally this stable ARN names the stream: the real one carries its creation time, which is
            # only known once the table exists, so stream pollers resolve it from the table (describe_table).
            return arn_formats[resource_type].format(r=self.region, a=self.account, n=physical) + "/stream/local"
        if attribute == "QueueUrl":
            return self.ref(logical_id)
        raise KeyError(f"GetAtt {logical_id}.{attribute} is not supported locally")

    def resolve(self, value: Any) -> Any:
        """Resolve intrinsic functions inside any template value."""
        return self._resolve_value(value, allow_refs=True)

    def _resolve_value(self, value: Any, allow_refs: bool) -> Any:
        if isinstance(value, list):
            return [self._resolve_value(v, allow_refs) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                if not allow_refs and arg in self.resources:
                    raise KeyError(arg)
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.attribute(arg[0], arg[1])
            if key == "Fn::Sub":
                return self._sub(arg, allow_refs)
            if key == "Fn::Join":
                return str(arg[0]).join(str(self._resolve_value(v, allow_refs)) for v in arg[1])
            if key == "Fn::Select":
                return self._resolve_value(arg[1], allow_refs)[int(arg[0])]
            if key == "Fn::If":
                branch = arg[1] if self.condition(arg[0]) else arg[2]
                return self._resolve_value(branch, allow_refs)
        return {k: self._resolve_value(v, allow_refs) for k, v in value.items()}

    def _sub(self, arg: Any, allow_refs: bool) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self._resolve_value(variables[name], allow_refs))
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.attribute(logical_id, attribute)
            if not allow_refs and name in self.resources:
                raise KeyError(name)
            return self.ref(name)

        return re.sub(r"\$\{([\w:.]+)\}", replace, text)

    def condition(self, name: str) -> bool:
        """Evaluate a named condition."""
        return self._condition(self.conditions[name])

    def _condition(self, expression: Any) -> bool:
        ((key, arg),) = expression.items()
        if key == "Fn::Equals":
            return bool(self.resolve(arg[0]) == self.resolve(arg[1]))
        if key == "Fn::Not":
            return not self._condition(arg[0])
        if key == "Fn::And":
            return all(self._condition(a) for a in arg)
        if key == "Fn::Or":
            return any(self._condition(a) for a in arg)
        if key == "Condition":
            return self.condition(arg)
        raise ValueError(f"unsupported condition {key}")


def project_root() -> Path:
    """The repository root (where ``template.yaml`` lives)."""
    return Path(__file__).resolve().parent.parent


def default_template() -> Template:
    """Herald's own template."""
    return Template(project_root() / "template.yaml")
