"""A campaign flow's definition: its steps and the graph they make (seed 004, issue 6).

A flow is a directed graph of steps from ``start``. Each step names what comes
next (``next``; a CONDITION names ``yes`` and ``no``); ``None`` ends the path.
:func:`graph_problems` refuses, naming the field, what cannot run:

- a step id used twice, a ``start`` or a branch naming a step that does not
  exist (a dangling branch);
- a step no path from ``start`` reaches;
- a cycle without a DELAY on it (it would spin without waiting);
- user-interaction steps (on-screen messages, data capture forms,
  signatures): Herald has no screen to show them on.

Step contents are checked here too: a CONDITION's rule with the segment rule
language, a WEB SERVICE's URL with the webhook rules, templates with the
sandboxed renderer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from herald.delivery.render import template_problem
from herald.delivery.webhook import url_problem
from herald.rules.model import RuleError, parse_rule

StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_STEPS = 200
USER_INTERACTION_STEPS = frozenset({"on_screen_message", "data_capture_form", "signature"})
DURATION_UNITS = ("minutes", "hours", "days", "weeks", "months")
# In a CONDITION rule, {"campaign": "self"} is this flow's own messages (its id is known only once saved).
SELF = "self"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StepId
    next: StepId | None = None

    def branches(self) -> dict[str, str | None]:
        """Where the flow may go after this step, by field name."""
        return {"next": self.next}


class Duration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Annotated[int, Field(ge=1, le=10_000)]
    unit: Literal["minutes", "hours", "days", "weeks", "months"]


class Until(BaseModel):
    """Wait until a time of day (and optionally a weekday) in the flow's time zone."""

    model_config = ConfigDict(extra="forbid")

    time: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] | None = None


class DelayStep(_Step):
    type: Literal["delay"]
    duration: Duration | None = None
    until: Until | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DelayStep:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a delay has exactly one of duration or until")
        return self


class ConditionStep(_Step):
    type: Literal["condition"]
    rule: dict[str, Any]
    yes: StepId | None = None
    no: StepId | None = None

    def branches(self) -> dict[str, str | None]:
        return {"yes": self.yes, "no": self.no, "next": self.next}

    @model_validator(mode="after")
    def _rule_parses(self) -> ConditionStep:
        if self.next is not None:
            raise ValueError("a condition continues through yes and no, not next")
        try:
            parse_rule(self.rule)
        except RuleError as exc:
            raise ValueError(f"rule: {exc}") from exc
        return self


class EmailStep(_Step):
    type: Literal["email"]
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]

    @model_validator(mode="after")
    def _templates(self) -> EmailStep:
        _check_templates(subject=self.subject, body=self.body)
        return self


class SmsStep(_Step):
    type: Literal["sms"]
    text: Annotated[str, StringConstraints(min_length=1, max_length=1600)]

    @model_validator(mode="after")
    def _templates(self) -> SmsStep:
        _check_templates(text=self.text)
        return self


class PushStep(_Step):
    type: Literal["push"]
    title: Annotated[str, StringConstraints(max_length=200)] = ""
    body: Annotated[str, StringConstraints(min_length=1, max_length=4000)]

    @model_validator(mode="after")
    def _templates(self) -> PushStep:
        _check_templates(title=self.title, body=self.body)
        return self


class CrossCampaignStep(_Step):
    """Reuse another campaign's message; sent only if the contact qualifies for it then."""

    type: Literal["cross_campaign_email", "cross_campaign_sms", "cross_campaign_push"]
    campaign_id: StepId


class WebServiceStep(_Step):
    type: Literal["web_service"]
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    body: str | None = None

    @model_validator(mode="after")
    def _url(self) -> WebServiceStep:
        problem = url_problem(self.url)
        if problem is not None:
            raise ValueError(f"url: {problem}")
        if self.body is not None:
            _check_templates(body=self.body)
        return self


class ExportPdfStep(_Step):
    type: Literal["export_pdf"]
    template: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]

    @model_validator(mode="after")
    def _templates(self) -> ExportPdfStep:
        _check_templates(template=self.template)
        return self


class SegmentStep(_Step):
    type: Literal["add_to_segment", "remove_from_segment"]
    segment_id: StepId


class PointsStep(_Step):
    type: Literal["award_points"]
    points: Annotated[int, Field(ge=-1_000_000, le=1_000_000)]


class StageStep(_Step):
    type: Literal["update_stage"]
    stage: Annotated[str, StringConstraints(min_length=1, max_length=64)]


Step = Annotated[
    DelayStep
    | ConditionStep
    | EmailStep
    | SmsStep
    | PushStep
    | CrossCampaignStep
    | WebServiceStep
    | ExportPdfStep
    | SegmentStep
    | PointsStep
    | StageStep,
    Field(discriminator="type"),
]


class FlowGraph(BaseModel):
    """The steps of a flow and where it starts; refused (naming the field) unless it can run."""

    model_config = ConfigDict(extra="forbid")

    start: StepId
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]

    @model_validator(mode="before")
    @classmethod
    def _no_user_interaction(cls, data: Any) -> Any:
        for index, step in enumerate(data.get("steps") or [] if isinstance(data, dict) else []):
            if isinstance(step, dict) and step.get("type") in USER_INTERACTION_STEPS:
                raise ValueError(
                    f"steps.{index}.type: {step['type']} is a user-interaction step; "
                    "flows deliver messages and cannot show screens, forms or signatures"
                )
        return data

    @model_validator(mode="after")
    def _runnable(self) -> FlowGraph:
        problems = graph_problems(self)
        if problems:
            raise ValueError("; ".join(f"{field}: {problem}" for field, problem in problems))
        return self

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def graph_problems(graph: FlowGraph) -> list[tuple[str, str]]:
    """Why the graph cannot run, as ``(field, problem)`` pairs; empty when it can."""
    problems: list[tuple[str, str]] = []
    positions: dict[str, int] = {}
    for index, step in enumerate(graph.steps):
        if step.id in positions:
            problems.append((f"steps.{index}.id", f"{step.id} is used by steps.{positions[step.id]} too"))
        positions.setdefault(step.id, index)
    if graph.start not in positions:
        problems.append(("start", f"no step has id {graph.start}"))
    for index, step in enumerate(graph.steps):
        for name, target in step.branches().items():
            if target is not None and target not in positions:
                problems.append((f"steps.{index}.{name}", f"no step has id {target} (a dangling branch)"))
    if problems:
        return problems
    reached = _reachable(graph, graph.start)
    for index, step in enumerate(graph.steps):
        if step.id not in reached:
            problems.append((f"steps.{index}", f"step {step.id} cannot be reached from start"))
    cycle = _cycle_without_delay(graph)
    if cycle:
        index = positions[cycle[0]]
        problems.append((f"steps.{index}", "a cycle without a delay: " + " → ".join([*cycle, cycle[0]])))
    return problems


def _successors(graph: FlowGraph, step_id: str) -> list[str]:
    return [t for t in graph.step(step_id).branches().values() if t is not None]


def _reachable(graph: FlowGraph, start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(_successors(graph, current))
    return seen


def _cycle_without_delay(graph: FlowGraph) -> list[str]:
    """A cycle through non-delay steps only (the steps in order), or an empty list.

    Delays are removed from the graph; any cycle left never waits.
    """
    instant = {s.id for s in graph.steps if not isinstance(s, DelayStep)}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in _successors(graph, node):
            if target not in instant:
                continue
            if state.get(target) == 1:
                return path[path.index(target) :]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for step_id in sorted(instant):
        if step_id not in state:
            cycle = visit(step_id)
            if cycle:
                return cycle
    return []


def _check_templates(**texts: str) -> None:
    for name, text in texts.items():
        problem = template_problem(text)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")


def own_campaign(rule: Any, flow_id: str) -> Any:
    """``{"campaign": "self"}`` in a rule means this flow's own messages."""
    if isinstance(rule, dict):
        return {k: (flow_id if k == "campaign" and v == SELF else own_campaign(v, flow_id)) for k, v in rule.items()}
    if isinstance(rule, list):
        return [own_campaign(v, flow_id) for v in rule]
    return rule
