"""Which language a page is shown in: asked for, remembered, or what the browser prefers."""

from __future__ import annotations

LANGUAGES = ("zh", "en")
DEFAULT = "zh"


def from_accept_language(header: str | None) -> str:
    """The first of our languages the browser lists, by its q-values; Chinese otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for order, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, order, primary))
    return min(ranked)[2] if ranked else DEFAULT


def choose(asked: str | None, remembered: str | None, accept_language: str | None) -> str:
    """The language asked for in this request, else the one remembered, else the browser's."""
    for candidate in (asked, remembered):
        if candidate in LANGUAGES:
            return candidate
    return from_accept_language(accept_language)
