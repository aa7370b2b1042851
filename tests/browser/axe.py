"""The accessibility check each page passes (axe-core, injected from tests/browser's
npm install) and the screenshots the README shows."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from playwright.async_api import Page

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
# Screenshots are written only when asked (they are committed, not made on every run):
#   HOLDSPACE_SCREENSHOTS=docs/screenshots scripts/test tests/browser
SCREENSHOTS_ENV = "HOLDSPACE_SCREENSHOTS"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


async def serious_violations(page: Page) -> list[str]:
    if not AXE.exists():
        raise AssertionError(f"{AXE} is missing: run scripts/ensure-browser")
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def check_accessibility(
    page: Page, label: str | None = None, *, context_label: str | None = None
) -> None:
    """Raises AssertionError listing every serious or critical axe-core violation (rule,
    help, the first few target selectors). ``context_label`` (or the positional ``label``)
    names the page and viewport in the message."""
    found = await serious_violations(page)
    if found:
        where = context_label or label or page.url
        listed = "\n".join(f"  - {v}" for v in found)
        raise AssertionError(f"{where}: {len(found)} serious/critical violation(s):\n{listed}")


async def screenshots(page: Page, name: str) -> None:
    """``<name>-phone.png`` and ``<name>-desktop.png`` of the page as it is now."""
    where = os.environ.get(SCREENSHOTS_ENV)
    if not where:
        return
    folder = Path(where)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    size = page.viewport_size
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(viewport)
        await page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    if size:
        await page.set_viewport_size(size)
