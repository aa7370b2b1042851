"""The pages' words in English and Simplified Chinese (services/web/locales/<lang>.json).

A template asks ``t("key", name=value)``; a key missing from a catalog is a bug that
tests/unit/test_web.py catches, so at run time it falls back to English, then to the key.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from web.domain.language import LANGUAGES

LOCALES = Path(__file__).with_name("locales")


@cache
def catalog(lang: str) -> dict[str, str]:
    return json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))


class Translator:
    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"no catalog for {lang!r}")
        self.lang = lang

    def __call__(self, key: str, **values: object) -> str:
        text = catalog(self.lang).get(key) or catalog("en").get(key) or key
        return text.format(**values) if values else text
