"""EXPORT TO PDF: a step's template rendered for one contact, laid out as a PDF in S3.

The template is the same sandboxed Jinja as message content (``contact.*``,
``campaign.*``: the flow's id and name), rendered with the same contact view
the sender gives an email. The text becomes paragraphs in a core PDF font
(fpdf2: pure Python, nothing from the operating system); a first line
starting with ``# `` is the document's title.

Core fonts cover Latin-1 only, so other characters are folded to their
closest Latin-1 form (``“`` → ``"``, ``ő`` → ``o``) or ``?``: a name in
another script never fails the step. The creation date is fixed, so the same
template and contact always give the same bytes, and the key depends only on
where the step ran: a retried step rewrites the identical object.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import TemplateError

from herald.delivery.render import personalisation, render
from herald.store import files

CONTENT_TYPE = "application/pdf"
FONT = "helvetica"
TITLE_PREFIX = "# "
# Any fixed instant: the PDF's metadata must not change between retries.
CREATION_DATE = datetime(2000, 1, 1, tzinfo=UTC)
_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u2022": "*",
        "\u20ac": "EUR",
        "\u00a0": " ",
        "\t": "    ",
    }
)


class PdfTemplateError(ValueError):
    """The step's template cannot be rendered for this contact (the message says why)."""


def pdf_context(contact: dict[str, Any], flow_id: str, flow_name: str) -> dict[str, Any]:
    """What the template sees: the contact as emails see it, and the flow as ``campaign``."""
    return {"contact": personalisation(contact), "campaign": {"id": flow_id, "name": flow_name}}


def render_pdf(template: str, context: dict[str, Any], *, compress: bool = True) -> bytes:
    """The template rendered with ``context`` (``contact``, ``campaign``) as PDF bytes.

    Raises :class:`PdfTemplateError` when the template does not render.
    """
    try:
        text = render(template, context.get("contact") or {}, context.get("campaign") or {})
    except (TemplateError, TypeError, ValueError) as exc:
        raise PdfTemplateError(f"template: {exc}") from exc
    return _layout(latin1(text), compress)


def latin1(text: str) -> str:
    """``text`` in characters a core PDF font can draw: folded to Latin-1, else ``?``."""
    folded = []
    for char in text.translate(_PUNCTUATION):
        if char == "\n" or (char.isprintable() and _encodable(char)):
            folded.append(char)
            continue
        if not char.isprintable():
            continue  # control characters draw nothing
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        folded.append(base if base and all(_encodable(c) for c in base) else "?")
    return "".join(folded)


def _encodable(char: str) -> bool:
    return ord(char) < 256


def _layout(text: str, compress: bool) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(CREATION_DATE)
    pdf.set_compression(compress)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    lines = text.strip("\n").split("\n")
    if lines and lines[0].startswith(TITLE_PREFIX):
        title = lines.pop(0).removeprefix(TITLE_PREFIX).strip()
        pdf.set_title(title)
        pdf.set_font(FONT, style="B", size=16)
        pdf.multi_cell(0, 9, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)
    pdf.set_font(FONT, size=11)
    for paragraph in "\n".join(lines).split("\n\n"):
        pdf.multi_cell(0, 5.5, paragraph.strip("\n"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)
    return bytes(pdf.output())


def pdf_key(flow_id: str, cohort_root: str, seq: int, step_id: str, contact_id: str) -> str:
    """Where one contact's document of one step visit lives: the same visit always names the same key.

    ``seq`` is written as in the step log's key (four digits), so keys sort in step order.
    """
    return f"flows/{flow_id}/pdf/{cohort_root}/{seq:04d}-{step_id}/{contact_id}.pdf"


def store_pdf(key: str, data: bytes) -> str:
    """Put the document into the flow files bucket (SSE-S3); returns its key."""
    return files.put(key, data, CONTENT_TYPE)
