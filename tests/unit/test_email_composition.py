"""The MIME message of a campaign email: unsubscribe headers (RFC 8058), footer, text and HTML parts."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from herald.delivery.email import compose, html_to_text

UNSUBSCRIBE = "https://api.example.com/v1/unsubscribe?token=" + "x" * 300 + ".sig"
PREFERENCES = "https://api.example.com/v1/preferences?token=" + "x" * 300 + ".sig"
ADDRESS = "Herald Demo Ltd, 1 Example Street <London>"


def parsed(message: EmailMessage) -> EmailMessage:
    result = message_from_bytes(message.as_bytes(), policy=default)
    assert isinstance(result, EmailMessage)
    return result


def test_a_plain_body_is_text_only_with_headers_and_footer() -> None:
    mail = parsed(compose("from@example.com", "to@example.org", "Hello", "Hi Ada", UNSUBSCRIBE, PREFERENCES, ADDRESS))
    assert mail.get_content_type() == "text/plain"
    assert (mail["From"], mail["To"], mail["Subject"]) == ("from@example.com", "to@example.org", "Hello")
    assert mail["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = mail.get_content().replace("\r\n", "\n")
    assert text.startswith("Hi Ada\n")
    assert f"Unsubscribe: {UNSUBSCRIBE}" in text and f"Communication preferences: {PREFERENCES}" in text
    assert ADDRESS in text


def test_an_html_body_is_multipart_alternative_with_an_escaped_footer_inside_body() -> None:
    html = "<html><body><p>Hi <b>Ada</b></p><a href='https://shop.example'>Shop</a></body></html>"
    mail = parsed(compose("from@example.com", "to@example.org", "Hello", html, UNSUBSCRIBE, PREFERENCES, ADDRESS))
    assert mail.get_content_type() == "multipart/alternative"
    text_part = mail.get_body(("plain",))
    html_part = mail.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, markup = text_part.get_content().replace("\r\n", "\n"), html_part.get_content()
    assert "Hi Ada" in text and "Shop (https://shop.example)" in text and ADDRESS in text
    assert "<b>" not in text
    assert markup.index("Unsubscribe</a>") < markup.index("</body>")
    assert f'<a href="{UNSUBSCRIBE}">Unsubscribe</a>' in markup
    assert "&lt;London&gt;" in markup and "<London>" not in markup


def test_html_to_text_keeps_paragraphs_and_drops_styles() -> None:
    assert html_to_text("<style>p{}</style><p>One</p><p>Two<br>Three</p>") == "One\n\nTwo\nThree\n"
