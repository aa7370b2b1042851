"""Messages from Jinja2 templates: a subject, a preview line, plain text and autoescaped HTML.

Templates live in ``notifications/templates`` as ``<name>.<lang>.txt.j2`` (blocks
``subject``, ``preview`` and ``body``) and ``<name>.<lang>.html.j2`` (HTML, autoescaped).
The preview is the first line of the plain text and a hidden preheader in the HTML:
it is what a phone shows before the message is opened, so, like the subject, it
never names the group (not even its discreet display name) or the person's situation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from notifications.domain.quiet import zone

LANGUAGES = ("en", "zh")
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS_EN = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND"})


@dataclass(frozen=True)
class Rendered:
    subject: str
    preview: str
    text: str
    html: str


def when(value: datetime | str | None, tz: str | None, lang: str) -> str:
    """A date and time in the reader's zone and language, naming the zone."""
    if value is None:
        return ""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    zone_name = zone(tz).key
    local = dt.astimezone(zone(tz))
    if lang == "zh":
        return (
            f"{local.year}年{local.month}月{local.day}日（{_WEEKDAYS_ZH[local.weekday()]}）"
            f"{local:%H:%M}（{zone_name}）"
        )
    return (
        f"{_WEEKDAYS_EN[local.weekday()]} {local.day} {_MONTHS_EN[local.month - 1]} "
        f"{local.year}, {local:%H:%M} ({zone_name})"
    )


def money(amount: dict[str, Any] | None) -> str:
    if not amount:
        return ""
    currency = amount["currency"]
    minor = int(amount["amount_minor"])
    if currency in _ZERO_DECIMAL:
        return f"{minor} {currency}"
    return f"{minor // 100}.{minor % 100:02d} {currency}"


def _one_line(text: str) -> str:
    # A subject is a header: no line breaks, no runs of spaces from the template.
    return " ".join(text.split())


class Renderer:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("notifications", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["money"] = money

    def render(self, template: str, lang: str, context: dict[str, Any]) -> Rendered:
        lang = lang if lang in LANGUAGES else "en"
        tz = context.get("tz")
        # Deliveries recorded before messages carried these have none.
        ctx = {
            "joining": None,
            "contact_email": None,
            **context,
            "lang": lang,
            "when": lambda v: when(v, tz, lang),
        }
        text_tmpl = self.env.get_template(f"{template}.{lang}.txt.j2")
        blocks = text_tmpl.new_context(ctx)
        subject = _one_line("".join(text_tmpl.blocks["subject"](blocks)))
        preview = _one_line("".join(text_tmpl.blocks["preview"](blocks)))
        text = text_tmpl.render(ctx).strip() + "\n"
        html = self.env.get_template(f"{template}.{lang}.html.j2").render(
            {**ctx, "subject": subject, "preview": preview}
        )
        return Rendered(subject=subject, preview=preview, text=text, html=html)

    def chat_text(self, template: str, lang: str, context: dict[str, Any]) -> str:
        """A coordinator alert for a chat group: the subject, then the plain text."""
        r = self.render(template, lang, context)
        return f"{r.subject}\n\n{r.text}".strip()
