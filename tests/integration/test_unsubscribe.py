"""Unsubscribe and preferences: the email's headers and footer, one-click, confirmation, preferences, 403s."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_string
from email.message import EmailMessage
from email.policy import default
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from herald import clock
from herald.store import messages
from herald.store import suppressions as suppression_store
from herald.store.tables import CampaignRecord, SuppressionRecord
from herald.unsubscribe import tokens
from local.apigw import ApiServer, http_response
from local.runtime import Runtime, RuntimeOptions
from tests.harness import Herald, api_event
from tests.integration.test_sender import (
    EMAIL,
    NOW,
    SMS,
    Clock,
    campaign,
    consent,
    contact,
    deliver,
    emails,
    record,
    send,
    stats,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = "List-Unsubscribe=One-Click"
CONFIGURATION_SET = "herald-email-dev"


@pytest.fixture
def time_() -> Iterator[Clock]:
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


@pytest.fixture
def ses_requests() -> Iterator[list[dict[str, Any]]]:
    """Every SES v2 SendEmail request's parameters, as the sender made them."""
    captured: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        captured.append(dict(params))

    events = boto3._get_default_session().events
    events.register("provide-client-params.sesv2.SendEmail", capture, unique_id="test-unsubscribe-capture")
    yield captured
    events.unregister("provide-client-params.sesv2.SendEmail", unique_id="test-unsubscribe-capture")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def public(
    h: Herald, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Call a public page as a browser or mail client would (form-encoded, no auth)."""
    event = api_event(method, path, body, {**FORM, **(headers or {})})
    status, out_headers, raw = http_response(h.host.invoke("ApiFunction", event))
    return status, out_headers, raw.decode()


def mime(index: int = -1) -> EmailMessage:
    raw = emails()[index].raw_data  # the raw MIME the mock SES captured
    parsed = message_from_string(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def unsubscribe_path(mail: EmailMessage) -> str:
    """The List-Unsubscribe URL's path and query below the stage (``/unsubscribe?token=…``)."""
    url = str(mail["List-Unsubscribe"]).strip("<>")
    parts = urlsplit(url)
    assert parts.scheme == "https"
    return parts.path.removeprefix("/v1") + "?" + parts.query


def token_of(path: str) -> str:
    return parse_qs(urlsplit(path).query)["token"][0]


def first_email(h: Herald, unsubscribe: dict[str, str] | None = None, **spec: Any) -> str:
    """Send campaign ``spring`` (email and SMS) to contact c1; return the email's unsubscribe path."""
    contact(h, "c1", phone="+447700900123", consent=consent("email", "sms"))
    settings = {"category": "offers", "campaign_group": "retail", **spec}
    if unsubscribe is not None:
        settings["unsubscribe"] = unsubscribe
    campaign("spring", [EMAIL, SMS], **settings)
    deliver(h, {"contact_id": "c1", "sends": [send("spring")]})
    assert len(emails()) == 1
    return unsubscribe_path(mime())


def activity(h: Herald, event_type: str) -> list[dict[str, Any]]:
    reply = h.call("GET", "/contacts/c1/events?limit=100")
    assert reply.status == 200, reply.body
    return [e for e in reply.body["items"] if e["type"] == event_type]


# --------------------------------------------------------------------------
# The email
# --------------------------------------------------------------------------


def test_a_campaign_email_carries_one_click_headers_links_and_postal_address(
    herald: Herald, time_: Clock, ses_requests: list[dict[str, Any]]
) -> None:
    path = first_email(herald)
    mail = mime()

    assert mail["List-Unsubscribe-Post"] == ONE_CLICK
    assert (
        str(mail["List-Unsubscribe"]).startswith("<https://") and "/v1/unsubscribe?token=" in mail["List-Unsubscribe"]
    )
    assert (mail["To"], mail["Subject"], mail["From"]) == ("c1@example.org", "Hi Ada", "campaigns@example.com")
    body = text_of(mail)
    assert body.startswith("Offer for you\n")
    assert f"Unsubscribe: https://{str(mail['List-Unsubscribe']).strip('<>').split('://', 1)[1]}" in body
    assert "/v1/preferences?token=" in body
    assert "Herald Demo Ltd, 1 Example Street, London EC1A 1AA, United Kingdom" in body
    [request] = ses_requests
    assert request["ConfigurationSetName"] == herald.template.physical_name("EmailConfigurationSet")
    assert {t["Name"] for t in request["EmailTags"]} == {"campaign_id", "contact_id", "message_id"}
    assert "Raw" in request["Content"]
    payload = tokens.verify(token_of(path))
    mid = messages.message_id("spring", "c1", "1", 0)
    assert (payload.contact_id, payload.campaign_id, payload.message_id, payload.channel) == (
        "c1",
        "spring",
        mid,
        "email",
    )
    assert (payload.category, payload.campaign_group, payload.scope, payload.channels) == (
        "offers",
        "retail",
        "all",
        "this",
    )
    assert payload.expires == int((NOW + tokens.TOKEN_LIFETIME).timestamp())


def test_an_html_email_is_multipart_with_the_footer_in_both_parts(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    campaign("html", [{**EMAIL, "body": "<html><body><p>Dear {{ contact.first_name }} &amp; co</p></body></html>"}])
    deliver(herald, {"contact_id": "c1", "sends": [send("html")]})
    mail = mime()
    assert mail.get_content_type() == "multipart/alternative"
    html_part = mail.get_body(("html",))
    assert html_part is not None
    markup = str(html_part.get_content())
    assert "Unsubscribe</a>" in markup and "Herald Demo Ltd" in markup
    assert "Dear Ada & co" in text_of(mail) and "Unsubscribe: https://" in text_of(mail)


# --------------------------------------------------------------------------
# Confirmation page and one-click
# --------------------------------------------------------------------------


def test_the_confirmation_page_names_the_scope_and_changes_nothing(herald: Herald, time_: Clock) -> None:
    path = first_email(herald, {"scope": "category", "channels": "all"})

    status, headers, page = public(herald, "GET", path)

    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "the category “offers” — all channels" in page
    assert '<form method="post" action="?token=' in page
    assert suppression_store.of_contact("c1") == {}
    assert activity(herald, "contact.unsubscribed") == []


def test_the_confirmation_form_post_unsubscribes(herald: Herald, time_: Clock) -> None:
    path = first_email(herald, {"scope": "campaign", "channels": "this"})
    status, _, page = public(herald, "POST", path, "confirm=yes")
    assert status == 200 and "You are unsubscribed" in page
    assert suppression_store.of_contact("c1") == {"email#campaign#spring": "unsubscribe"}
    stored = SuppressionRecord.get("c1", "email#campaign#spring")
    assert stored.source == f"link:{messages.message_id('spring', 'c1', '1', 0)}"


MATCHES = {
    "campaign": {"spring"},
    "category": {"spring", "same-category"},
    "group": {"spring", "same-group"},
    "category_and_group": {"spring", "same-category", "same-group"},
    "all": {"spring", "same-category", "same-group", "unrelated"},
}
PROBES = {
    "spring": {"category": "offers", "campaign_group": "retail"},
    "same-category": {"category": "offers", "campaign_group": "wholesale"},
    "same-group": {"category": "news", "campaign_group": "retail"},
    "unrelated": {"category": "news", "campaign_group": "wholesale"},
}


@pytest.mark.parametrize("channels", ["this", "all"])
@pytest.mark.parametrize("scope", list(MATCHES))
def test_one_click_suppresses_exactly_the_configured_scope_and_channels(
    herald: Herald, time_: Clock, scope: str, channels: str
) -> None:
    path = first_email(herald, {"scope": scope, "channels": channels})

    status, _, page = public(herald, "POST", path, ONE_CLICK)

    assert status == 200 and "You are unsubscribed" in page
    stored = suppression_store.of_contact("c1")
    assert set(stored.values()) == {"unsubscribe"}
    assert all(s.startswith("email#" if channels == "this" else "all#") for s in stored)
    source = SuppressionRecord.get("c1", next(iter(stored))).source
    assert source == f"one-click:{messages.message_id('spring', 'c1', '1', 0)}"
    # The sender now holds back what the scope covers, and only that.
    for name, spec in PROBES.items():
        if name != "spring":
            campaign(name, [EMAIL, SMS], **spec)
    deliver(herald, {"contact_id": "c1", "sends": [send(name, occurrence="2") for name in PROBES]})
    for name in PROBES:
        for index, channel in enumerate(("email", "sms")):
            held = name in MATCHES[scope] and (channel == "email" or channels == "all")
            message = record(name, "c1", index, occurrence="2")
            assert message is not None
            expected = ("suppressed", "unsubscribe") if held else ("sent", None)
            assert (message.status, message.reason) == expected, (name, channel)


def test_one_click_is_idempotent_counted_once_with_one_event(herald: Herald, time_: Clock) -> None:
    path = first_email(herald, {"scope": "all", "channels": "all"})

    for body in (ONE_CLICK, ONE_CLICK, "", "confirm=yes"):
        status, _, _ = public(herald, "POST", path, body)
        assert status == 200

    assert suppression_store.of_contact("c1") == {"all#all": "unsubscribe"}
    assert stats("spring")["unsubscribed"] == 1
    [event] = activity(herald, "contact.unsubscribed")
    assert event["properties"]["scopes"] == "all#all" and event["properties"]["campaign_id"] == "spring"


def test_one_click_leaves_an_existing_complaint_alone_and_counts_nothing(herald: Herald, time_: Clock) -> None:
    path = first_email(herald, {"scope": "all", "channels": "this"})
    SuppressionRecord("c1", "email#all", reason="complaint", at=clock.now_iso(), source="ses").save()
    assert public(herald, "POST", path, ONE_CLICK)[0] == 200
    assert suppression_store.of_contact("c1") == {"email#all": "complaint"}
    assert "unsubscribed" not in stats("spring")


def test_a_deleted_contact_gets_a_success_page_and_nothing_is_written(herald: Herald, time_: Clock) -> None:
    path = first_email(herald)
    assert herald.call("DELETE", "/contacts/c1").status in (200, 204)
    status, _, page = public(herald, "POST", path, ONE_CLICK)
    assert status == 200 and "you will not receive more" in page
    assert suppression_store.of_contact("c1") == {}
    assert public(herald, "GET", path.replace("/unsubscribe", "/preferences"))[0] == 200


# --------------------------------------------------------------------------
# Refused tokens
# --------------------------------------------------------------------------


def _tampered(token: str) -> str:
    encoded, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    data["c"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{forged}.{signature}"


ONE_CLICK_ROUTE = ("POST", "/unsubscribe", ONE_CLICK)
REFUSALS = [
    *[(kind, *ONE_CLICK_ROUTE) for kind in ("tampered", "forged-signature", "garbage", "expired")],
    ("tampered", "GET", "/unsubscribe", ""),
    ("expired", "GET", "/preferences", ""),
    ("tampered", "POST", "/preferences", "action=save&unsubscribe=email%23all"),
    ("expired", "POST", "/preferences", "action=save&unsubscribe=email%23all"),
]


@pytest.mark.parametrize(("kind", "method", "route", "body"), REFUSALS)
def test_a_bad_token_is_403_and_changes_nothing(
    herald: Herald, time_: Clock, kind: str, method: str, route: str, body: str
) -> None:
    contact(herald, "someone-else")
    token = token_of(first_email(herald))
    if kind == "tampered":
        token = _tampered(token)
    elif kind == "forged-signature":
        token = token.split(".")[0] + "." + "A" * 43
    elif kind == "garbage":
        token = "not-a-token"
    else:
        time_.advance(days=366)

    status, headers, text = public(herald, method, f"{route}?token={token}", body)

    assert status == 403
    assert json.loads(text)["error"] == "forbidden" and headers["Content-Type"] == "application/json"
    assert suppression_store.of_contact("c1") == {} and suppression_store.of_contact("someone-else") == {}


def test_a_browser_gets_the_refusal_as_a_page_and_a_missing_token_is_400(herald: Herald, time_: Clock) -> None:
    status, headers, page = public(herald, "GET", "/unsubscribe?token=x.y", headers={"Accept": "text/html"})
    assert status == 403 and headers["Content-Type"].startswith("text/html") and "signature is not valid" in page
    status, _, text = public(herald, "POST", "/unsubscribe", ONE_CLICK)
    assert status == 400 and json.loads(text)["field"] == "token"


def test_pages_escape_every_value(herald: Herald, time_: Clock) -> None:
    contact(herald, "c1")
    campaign("xss", [EMAIL])
    stored = CampaignRecord.get("campaign", "xss")
    stored.name = "<script>alert(1)</script>"
    stored.save()
    deliver(herald, {"contact_id": "c1", "sends": [send("xss")]})
    path = unsubscribe_path(mime())
    _, _, page = public(herald, "GET", path.replace("/unsubscribe", "/preferences"))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --------------------------------------------------------------------------
# Preferences
# --------------------------------------------------------------------------


def test_preferences_show_state_apply_choices_and_never_lift_a_complaint(herald: Herald, time_: Clock) -> None:
    path = first_email(herald).replace("/unsubscribe", "/preferences")
    SuppressionRecord("c1", "email#all", reason="complaint", at=clock.now_iso(), source="ses").save()

    status, _, page = public(herald, "GET", path)
    assert status == 200
    for scope in ("email#campaign#spring", "all#category#offers", "email#group#retail", "all#all"):
        assert f'value="{scope}"' in page
    assert 'value="email#all" checked disabled' in page and "blocked (complaint)" in page

    chosen = "action=save&unsubscribe=all%23category%23offers&unsubscribe=email%23group%23retail"
    status, _, page = public(herald, "POST", path, chosen)
    assert status == 200 and "Your preferences are saved." in page
    assert suppression_store.of_contact("c1") == {
        "email#all": "complaint",
        "all#category#offers": "unsubscribe",
        "email#group#retail": "unsubscribe",
    }
    assert stats("spring")["unsubscribed"] == 1
    page = public(herald, "GET", path)[2]
    campaign_cell = page.split('value="email#campaign#spring"', 1)[1].split("</label>", 1)[0]
    assert "covered by a wider choice" in campaign_cell  # by the email complaint and its unsubscribed category

    # Re-subscribe to everything: the unsubscribes go, the complaint stays.
    status, _, page = public(herald, "POST", path, "action=save")
    assert status == 200
    assert suppression_store.of_contact("c1") == {"email#all": "complaint"}
    assert len(activity(herald, "contact.resubscribed")) == 1
    assert public(herald, "POST", path, "action=save")[2].count("Nothing changed.") == 1


def test_preferences_refuse_a_scope_they_do_not_offer_and_a_post_without_the_form(herald: Herald, time_: Clock) -> None:
    path = first_email(herald).replace("/unsubscribe", "/preferences")
    status, _, text = public(herald, "POST", path, "action=save&unsubscribe=email%23campaign%23other")
    assert status == 400 and json.loads(text)["field"] == "unsubscribe"
    status, _, text = public(herald, "POST", path, "")
    assert status == 400 and json.loads(text)["field"] == "action"
    assert suppression_store.of_contact("c1") == {}


def test_a_token_stays_valid_for_its_lifetime(herald: Herald, time_: Clock) -> None:
    path = first_email(herald)
    time_.advance(days=364)
    assert public(herald, "POST", path, ONE_CLICK)[0] == 200
    time_.now = NOW + timedelta(days=365)
    assert public(herald, "GET", path)[0] == 403


# --------------------------------------------------------------------------
# The embedded runtime
# --------------------------------------------------------------------------


def test_the_embedded_runtime_links_to_itself_shows_its_outbox_and_routes_the_pages(
    herald: Herald, time_: Clock
) -> None:
    runtime = Runtime(RuntimeOptions(template_path=herald.template.path))
    runtime.template, runtime.host = herald.template, herald.host
    runtime._point_links_here("http://127.0.0.1:3999")  # as start() does with its API server's URL
    contact(herald, "c1")
    campaign("spring", [EMAIL])
    deliver(herald, {"contact_id": "c1", "sends": [send("spring")]})
    contact(herald, "c2")
    deliver(herald, {"contact_id": "c2", "sends": [send("spring")]})

    answer = runtime._local_route("GET", "outbox")

    assert answer is not None and answer[0] == 200
    newest, oldest = answer[1]["items"]
    assert (newest["to"], oldest["to"], newest["subject"]) == ("c2@example.org", "c1@example.org", "Hi Ada")
    assert "List-Unsubscribe: <http://127.0.0.1:3999/unsubscribe?token=" in newest["raw"]
    # The local gateway serves the link without authentication, as the template's public route.
    link = str(mime(0)["List-Unsubscribe"]).strip("<>").removeprefix("http://127.0.0.1:3999")
    server = ApiServer(herald.template, herald.host, "127.0.0.1", 0)
    try:
        status, _, _ = server.dispatch("POST", link, FORM, ONE_CLICK.encode())
        assert status == 200
        status, headers, page = server.dispatch("GET", link.replace("/unsubscribe", "/preferences"), {}, b"")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"unsubscribed" in page
    finally:
        server.httpd.server_close()
    assert suppression_store.of_contact("c1") == {"email#all": "unsubscribe"}


# --------------------------------------------------------------------------
# The campaign setting
# --------------------------------------------------------------------------


def test_the_campaign_unsubscribe_setting_defaults_and_requires_its_category_or_group(herald: Herald) -> None:
    base = {"name": "Spring", "description": "d", "actions": [EMAIL]}
    created = herald.call("POST", "/campaigns", base)
    assert created.status == 201, created.body
    assert created.body["unsubscribe"] == {"scope": "all", "channels": "this"}
    for scope, missing in (("category", "category"), ("group", "campaign_group"), ("category_and_group", "category")):
        reply = herald.call("POST", "/campaigns", {**base, "unsubscribe": {"scope": scope}})
        assert reply.status == 422 and reply.body["errors"][0]["field"] == missing, reply.body
    reply = herald.call("POST", "/campaigns", {**base, "unsubscribe": {"scope": "sometimes"}})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "unsubscribe.scope"
    cid = created.body["id"]
    reply = herald.call("PATCH", f"/campaigns/{cid}", {"unsubscribe": {"scope": "group", "channels": "all"}})
    assert reply.status == 422 and reply.body["errors"][0]["field"] == "campaign_group"
    reply = herald.call(
        "PATCH", f"/campaigns/{cid}", {"campaign_group": "retail", "unsubscribe": {"scope": "group", "channels": "all"}}
    )
    assert reply.status == 200 and reply.body["unsubscribe"] == {"scope": "group", "channels": "all"}
