"""Campaign email as it leaves Herald: the MIME message, its unsubscribe headers and footer.

Every marketing email carries (issue 5, RFC 8058, CAN-SPAM):

- ``List-Unsubscribe: <https://…/unsubscribe?token=…>`` and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, so a mail client's
  "unsubscribe" button is one POST to that URL;
- a footer with the same unsubscribe link, a link to the preferences page and
  the sender's postal address.

An HTML body goes out as ``multipart/alternative`` with a plain-text part
derived from it; a plain body as ``text/plain`` alone. The links carry a
signed token (:mod:`herald.unsubscribe.tokens`) naming the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

from markupsafe import escape

from herald.config import ConfigurationError, EmailSettings
from herald.unsubscribe import tokens

# Long enough that an unsubscribe URL is never folded or encoded (RFC 5322 allows 998).
_POLICY = SMTP.clone(max_line_length=998)
_HTML = re.compile(r"<(html|body|p|div|br|a|table|span|h[1-6])\b", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)

_settings: EmailSettings | None = None


def configure(settings: EmailSettings) -> None:
    """Set the public URL and postal address once, at the sender's cold start."""
    global _settings
    _settings = settings


def settings() -> EmailSettings:
    """The configured settings; a function that sends email must have called :func:`configure`."""
    if _settings is None:
        raise ConfigurationError("email settings (PUBLIC_API_URL, POSTAL_ADDRESS) were not configured")
    return _settings


@dataclass(frozen=True)
class Links:
    """The two links of one email."""

    unsubscribe: str
    preferences: str


def links(contact_id: str, campaign_id: str, message_id: str, spec: dict[str, Any]) -> Links:
    """Signed unsubscribe and preference links for one email of a campaign (``spec`` as at send time)."""
    options = spec.get("unsubscribe") or {}
    token = tokens.issue(
        contact_id,
        campaign_id,
        message_id,
        "email",
        spec.get("category"),
        spec.get("campaign_group"),
        options.get("scope") or "all",
        options.get("channels") or "this",
    )
    query = urlencode({"token": token})
    base = settings().public_api_url
    return Links(f"{base}/unsubscribe?{query}", f"{base}/preferences?{query}")


def looks_like_html(body: str) -> bool:
    return bool(_HTML.search(body))


def compose(
    sender: str,
    to: str,
    subject: str,
    body: str,
    unsubscribe_url: str,
    preferences_url: str,
    postal_address: str,
) -> EmailMessage:
    """The MIME message: headers, the body with its footer, text and (for HTML bodies) HTML parts."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    if unsubscribe_url:
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text_footer = _text_footer(unsubscribe_url, preferences_url, postal_address)
    if looks_like_html(body):
        message.set_content(html_to_text(body).rstrip() + "\n" + text_footer, charset="utf-8")
        message.add_alternative(
            _with_html_footer(body, unsubscribe_url, preferences_url, postal_address), subtype="html", charset="utf-8"
        )
    else:
        message.set_content(body.rstrip() + "\n" + text_footer, charset="utf-8")
    return message


def _text_footer(unsubscribe_url: str, preferences_url: str, postal_address: str) -> str:
    lines = ["", "-- "]  # the conventional signature separator: clients dim what follows
    if unsubscribe_url:
        lines.append(f"Unsubscribe: {unsubscribe_url}")
    if preferences_url:
        lines.append(f"Communication preferences: {preferences_url}")
    lines.append(postal_address)
    return "\n".join(lines) + "\n"


def _with_html_footer(body: str, unsubscribe_url: str, preferences_url: str, postal_address: str) -> str:
    parts = []
    if unsubscribe_url:
        parts.append(f'<a href="{escape(unsubscribe_url)}">Unsubscribe</a>')
    if preferences_url:
        parts.append(f'<a href="{escape(preferences_url)}">Communication preferences</a>')
    footer = (
        '<hr><p style="font-size:12px;color:#666">'
        + " · ".join(parts)
        + ("<br>" if parts else "")
        + str(escape(postal_address))
        + "</p>"
    )
    ends = [found.start() for found in _BODY_END.finditer(body)]
    if not ends:
        return body + footer
    return body[: ends[-1]] + footer + body[ends[-1] :]


class _TextExtractor(HTMLParser):
    """Plain text of an HTML body: block elements become line breaks, links keep their address."""

    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
    SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body (for the text/plain alternative)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [line.strip() for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
