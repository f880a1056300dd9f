"""Message content: Jinja templates rendered in a sandbox.

Personalisation reads ``contact`` (its fields and ``attributes``) and
``campaign`` (name, id); defaults come from Jinja's ``default`` filter, e.g.
``{{ contact.first_name | default("there") }}``. A template naming any other
top-level variable is refused when the campaign is saved, so no message ever
goes out with an unfilled template variable.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

ALLOWED_VARIABLES = frozenset({"contact", "campaign"})

_environment = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def template_problem(text: str) -> str | None:
    """Why the template cannot be used, or None when it is fine."""
    try:
        parsed = _environment.parse(text)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(parsed) - ALLOWED_VARIABLES)
    if unknown:
        return f"unknown template variable(s) {', '.join(unknown)}; use contact.* or campaign.*"
    return None


def render(text: str, contact: dict[str, Any], campaign: dict[str, Any]) -> str:
    """Render a checked template for one contact (missing fields render empty)."""
    return _environment.from_string(text).render(contact=contact, campaign=campaign)


def personalisation(contact: dict[str, Any]) -> dict[str, Any]:
    """The contact fields a template may read (never consent or bounce state)."""
    fields = ("contact_id", "kind", "status", "email", "phone", "first_name", "last_name", "time_zone")
    view = {name: contact.get(name) for name in fields if contact.get(name) is not None}
    view["attributes"] = dict(contact.get("attributes") or {})
    return view
