"""The shape the README's map promises, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_services_are_the_four_packages() -> None:
    assert SERVICE_PACKAGES == {"registration", "consent", "payments", "notifications"}


def test_the_common_library_imports_no_service() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & SERVICE_PACKAGES)
        for path in sorted((ROOT / "shared").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_service_imports_another() -> None:
    offenders = {}
    for name in sorted(SERVICE_PACKAGES):
        for path in sorted((ROOT / "services" / name).rglob("*.py")):
            others = imported_packages(path) & (SERVICE_PACKAGES - {name})
            if others:
                offenders[str(path.relative_to(ROOT))] = sorted(others)
    assert offenders == {}


def test_domain_modules_do_no_io() -> None:
    io = {"pymongo", "aio_pika", "aiormq", "fastapi", "starlette", "httpx", "aiosmtplib"}
    offenders = {}
    for path in sorted((ROOT / "services").glob("*/domain/*.py")):
        used = imported_packages(path) & io
        if used:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert offenders == {}


def test_routes_call_use_cases_and_views_never_collections() -> None:
    storage = {"stores", "collection", "find", "find_one", "insert_one", "update_one"}
    offenders = {}
    for path in sorted((ROOT / "services").glob("*/api.py")):
        tree = ast.parse(path.read_text())
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & storage
        if used:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert offenders == {}


def test_every_service_has_the_same_rooms() -> None:
    rooms = ("api.py", "app.py", "handlers.py", "service.py", "store.py", "views.py", "domain")
    missing = {
        name: [room for room in rooms if not (ROOT / "services" / name / room).exists()]
        for name in sorted(SERVICE_PACKAGES)
    }
    assert {k: v for k, v in missing.items() if v} == {}
