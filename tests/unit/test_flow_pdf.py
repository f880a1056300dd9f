"""EXPORT TO PDF rendering: the contact's text in a PDF, any script, the same bytes every time."""

from __future__ import annotations

import re
import zlib

import pytest

from herald.flows.pdf import PdfTemplateError, latin1, pdf_context, pdf_key, render_pdf

CONTACT = {
    "contact_id": "c-1",
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "consent": {"email": {"granted": True}},  # never visible to templates
    "attributes": {"plan": "gold"},
}
TEMPLATE = "# Welcome {{ contact.first_name }}\n\nDear {{ contact.first_name }} {{ contact.last_name }},\n\n"
TEMPLATE += "your plan is {{ contact.attributes.plan }} in {{ campaign.name }}."


def text_of(pdf: bytes) -> str:
    """The strings drawn by an uncompressed PDF's content streams (``(...) Tj``), joined."""
    drawn = re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", pdf)
    return " ".join(chunk.decode("latin-1").replace("\\(", "(").replace("\\)", ")") for chunk in drawn)


def test_renders_the_contact_into_a_pdf() -> None:
    data = render_pdf(TEMPLATE, pdf_context(CONTACT, "f-1", "Onboarding"), compress=False)
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    text = text_of(data)
    assert "Welcome Ada" in text
    assert "Dear Ada Lovelace," in text
    assert "your plan is gold in Onboarding." in text
    assert b"/Title (Welcome Ada)" in data  # the "# " first line is the document's title


def test_context_is_the_email_view_of_the_contact() -> None:
    context = pdf_context(CONTACT, "f-1", "Onboarding")
    assert context["campaign"] == {"id": "f-1", "name": "Onboarding"}
    assert "consent" not in context["contact"]
    assert context["contact"]["first_name"] == "Ada"


def test_same_input_gives_the_same_bytes() -> None:
    context = pdf_context(CONTACT, "f-1", "Onboarding")
    first = render_pdf(TEMPLATE, context)
    assert render_pdf(TEMPLATE, context) == first
    assert first.startswith(b"%PDF-")
    # Compressed by default: the text is not readable in the raw bytes, but in the inflated stream.
    assert b"Lovelace" not in first
    stream = re.search(rb"stream\r?\n(.*?)\r?\nendstream", first, re.DOTALL)
    assert stream is not None
    assert b"Lovelace" in zlib.decompress(stream.group(1))


def test_non_latin_text_is_folded_not_fatal() -> None:
    contact = {**CONTACT, "first_name": "Zoë “Łucja” 日本", "last_name": "\u0150\u2019Brien \u2014 \u20ac5 \u2026"}
    data = render_pdf("Hello {{ contact.first_name }} {{ contact.last_name }}", pdf_context(contact, "f", "F"))
    assert data.startswith(b"%PDF-")
    text = text_of(
        render_pdf("{{ contact.first_name }} {{ contact.last_name }}", pdf_context(contact, "f", "F"), compress=False)
    )
    assert 'Zoë "?ucja" ??' in text
    assert "O'Brien - EUR5 ..." in text


def test_latin1_folding() -> None:
    assert latin1("café ﬁne ő\x07\tx") == "café fine o    x"
    assert latin1("Привет") == "??????"


def test_long_text_wraps_onto_more_pages() -> None:
    data = render_pdf("{% for i in range(400) %}line {{ i }} of a long letter\n\n{% endfor %}", {}, compress=False)
    assert data.count(b"/Type /Page\n") > 1
    assert "line 399 of a long letter" in text_of(data)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Hi {{ contact.first_name ", "template: "),
        ("{{ contact.attributes.missing.deeper }}", "template: "),
        ("{{ contact.__class__.__mro__ }}", "template: "),
    ],
)
def test_template_errors_raise_a_clear_error(template: str, problem: str) -> None:
    with pytest.raises(PdfTemplateError, match=problem):
        render_pdf(template, pdf_context(CONTACT, "f", "F"))


def test_keys_name_the_step_visit() -> None:
    assert pdf_key("f-1", "root-9", 3, "welcome", "c-1") == "flows/f-1/pdf/root-9/0003-welcome/c-1.pdf"
