"""The README shows every page the browser journeys look at, phone-sized and desktop."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_page_the_journeys_check_has_both_screenshots_in_the_readme() -> None:
    journeys = (ROOT / "tests/browser/test_pages_journey.py").read_text()
    pages = set(re.findall(r'await look\(\w+, "([\w-]+)"\)', journeys))
    assert len(pages) >= 15
    shown = re.findall(r"\]\((docs/screenshots/[\w-]+\.png)\)", (ROOT / "README.md").read_text())
    wanted = {f"docs/screenshots/{p}-{size}.png" for p in pages for size in ("phone", "desktop")}
    assert sorted(wanted - set(shown)) == []
    assert [s for s in shown if not (ROOT / s).is_file()] == []
