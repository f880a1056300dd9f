"""Public unsubscribe and preference pages: the links in every campaign email.

These routes, with the lead form submit, are the API's only unauthenticated
ones (the template gives each its own ``Authorizer: NONE`` event and a tight
throttle). The signed ``token`` query parameter is the only credential:

- ``POST /unsubscribe?token=…`` — RFC 8058 one-click (body
  ``List-Unsubscribe=One-Click``), also the confirmation form's submit and an
  empty body. It applies at once: a mail client's unsubscribe button gets no
  second chance to confirm. No cookies, idempotent.
- ``GET /unsubscribe?token=…`` — a confirmation page that changes nothing
  (mail scanners follow links; only the form's POST acts).
- ``GET``/``POST /preferences?token=…`` — every scope the email's campaign
  offers, with its state, and the form that changes them.

A forged, tampered or expired token is 403 and nothing changes; a missing one
is 400 naming ``token``. Errors answer in HTML to browsers (``Accept:
text/html``) and in the API's JSON otherwise; both carry the same message.
Every value in a page is escaped by Jinja's autoescape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.metrics import MetricUnit
from jinja2 import DictLoader, Environment, select_autoescape

from herald.api.responses import json_response
from herald.errors import BadRequest, Forbidden, HeraldError
from herald.observability import metrics
from herald.unsubscribe import service, tokens
from herald.unsubscribe.tokens import TokenPayload

router = Router()

ONE_CLICK = ("List-Unsubscribe", "One-Click")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}
td,th{padding:.3em .8em;text-align:left}.note{color:#666;font-size:.9em}</style></head>
<body><h1>{{ title }}</h1>{% block content %}{% endblock %}</body></html>"""

_TEMPLATES = {
    "layout.html": _LAYOUT,
    "confirm.html": """{% extends "layout.html" %}{% block content %}
<p>Unsubscribe from:</p><ul>{% for line in scopes %}<li>{{ line }}</li>{% endfor %}</ul>
<form method="post" action="?token={{ token }}"><input type="hidden" name="confirm" value="yes">
<button type="submit">Unsubscribe</button></form>
<p class="note"><a href="{{ preferences }}">Choose what you receive instead</a></p>{% endblock %}""",
    "done.html": """{% extends "layout.html" %}{% block content %}
{% if found %}<p>You will no longer receive:</p>
<ul>{% for line in scopes %}<li>{{ line }}</li>{% endfor %}</ul>
<p class="note"><a href="{{ preferences }}">Communication preferences</a></p>
{% else %}<p>We hold no contact details for you any more, so you will not receive more messages.</p>{% endif %}
{% endblock %}""",
    "preferences.html": """{% extends "layout.html" %}{% block content %}
{% if not found %}<p>We hold no contact details for you any more, so you will not receive more messages.</p>
{% else %}{% if saved is not none %}<p><strong>{{ saved }}</strong></p>{% endif %}
<p>Tick what you do <em>not</em> want to receive.</p>
<form method="post" action="?token={{ token }}"><input type="hidden" name="action" value="save">
<table><tr><th></th>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for label, cells in rows %}<tr><td>{{ label }}</td>{% for option in cells %}<td>
<label><input type="checkbox" name="unsubscribe" value="{{ option.scope }}"
{%- if option.reason %} checked{% endif %}{% if not option.editable %} disabled{% endif %}>
{% if option.reason and not option.editable %}blocked ({{ option.reason }})
{% elif option.reason %}unsubscribed{% elif option.covered_by %}covered by a wider choice{% else %}subscribed{% endif %}
</label></td>{% endfor %}</tr>{% endfor %}</table>
<button type="submit">Save</button></form>{% endif %}{% endblock %}""",
    "error.html": """{% extends "layout.html" %}{% block content %}<p>{{ message }}</p>{% endblock %}""",
}

_pages = Environment(loader=DictLoader(_TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True))


def _page(status: int, template: str, **values: Any) -> Response[Any]:
    body = _pages.get_template(template).render(**values)
    return Response(status_code=status, content_type="text/html; charset=utf-8", body=body, headers=dict(NO_STORE))


def _public(handler: Callable[[], Response[Any]]) -> Callable[[], Response[Any]]:
    """Answer a HeraldError as an HTML page to browsers and as the API's JSON otherwise."""

    def wrapped() -> Response[Any]:
        try:
            return handler()
        except HeraldError as exc:
            if isinstance(exc, Forbidden):
                metrics.add_metric(name="UnsubscribeTokenRejected", unit=MetricUnit.Count, value=1)
            accept = router.current_event.headers.get("accept") or router.current_event.headers.get("Accept") or ""
            if "text/html" in accept:
                return _page(exc.status, "error.html", title="This link cannot be used", message=exc.message)
            return json_response(exc.status, exc.body(), dict(NO_STORE))

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _token() -> tuple[str, TokenPayload]:
    """The request's token, verified (400 when absent, 403 when not genuine)."""
    token = router.current_event.get_query_string_value("token")
    if not token:
        raise BadRequest("token: required; use the link from the email as it was sent", field="token")
    return token, tokens.verify(token)


def _form() -> dict[str, list[str]]:
    body = router.current_event.decoded_body or ""
    try:
        return parse_qs(body, keep_blank_values=True, strict_parsing=False, max_num_fields=100)
    except ValueError as exc:
        raise BadRequest("body: not a form (application/x-www-form-urlencoded)", field="body") from exc


def _preferences_url(token: str) -> str:
    return f"preferences?token={token}"


@router.get("/unsubscribe", include_in_schema=False)
@_public
def confirm_page() -> Response[Any]:
    """The confirmation page: names what would stop, changes nothing."""
    token, payload = _token()
    return _page(
        200,
        "confirm.html",
        title="Unsubscribe?",
        scopes=service.describe(payload),
        token=token,
        preferences=_preferences_url(token),
    )


@router.post("/unsubscribe", include_in_schema=False)
@_public
def unsubscribe() -> Response[Any]:
    """One-click (RFC 8058) or the confirmation form: unsubscribe now, idempotently."""
    token, payload = _token()
    form = _form()
    one_click = ONE_CLICK[1] in form.get(ONE_CLICK[0], [])
    outcome = service.unsubscribe(payload, f"{'one-click' if one_click else 'link'}:{payload.message_id}")
    if outcome.added:
        metrics.add_metric(name="Unsubscribed", unit=MetricUnit.Count, value=1)
    return _page(
        200,
        "done.html",
        title="You are unsubscribed",
        found=outcome.contact_found,
        scopes=service.describe(payload),
        preferences=_preferences_url(token),
    )


@router.get("/preferences", include_in_schema=False)
@_public
def preferences_page() -> Response[Any]:
    """The preferences page with the contact's current state."""
    token, payload = _token()
    return _preferences(token, payload, saved=None)


@router.post("/preferences", include_in_schema=False)
@_public
def save_preferences() -> Response[Any]:
    """Apply the form: ticked scopes are unsubscribed, unticked ones re-subscribed (complaints stay)."""
    token, payload = _token()
    form = _form()
    if form.get("action") != ["save"]:
        raise BadRequest("action: must be save (submit the preferences form)", field="action")
    outcome = service.apply_preferences(payload, form.get("unsubscribe", []))
    if outcome.added:
        metrics.add_metric(name="Unsubscribed", unit=MetricUnit.Count, value=1)
    if outcome.removed:
        metrics.add_metric(name="Resubscribed", unit=MetricUnit.Count, value=1)
    saved = "Your preferences are saved." if outcome.changed else "Nothing changed."
    return _preferences(token, payload, saved=saved)


def _preferences(token: str, payload: TokenPayload, saved: str | None) -> Response[Any]:
    current = service.preferences(payload)
    labels = {
        f"campaign#{payload.campaign_id}": f"This campaign ({current.campaign_name})",
        f"category#{payload.category}": f"Category {payload.category}",
        f"group#{payload.campaign_group}": f"Campaign group {payload.campaign_group}",
        "all": "All marketing",
    }
    rows: dict[str, list[service.Option]] = {}
    for option in current.options:
        rows.setdefault(option.what, []).append(option)
    return _page(
        200,
        "preferences.html",
        title="Communication preferences",
        found=current.contact_found,
        saved=saved,
        token=token,
        columns=[f"By {payload.channel}", "On every channel"],
        rows=[(labels[what], cells) for what, cells in rows.items()],
    )
