"""The shape the README's map promises, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = {p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()}
# The web pages are a client of the four event services' HTTP APIs, not one of them.
EVENT_SERVICES = SERVICE_PACKAGES - {"web"}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_services_are_five_event_services_and_the_web_pages() -> None:
    assert EVENT_SERVICES == {"registration", "consent", "payments", "notifications", "progress"}
    assert SERVICE_PACKAGES == EVENT_SERVICES | {"web"}


def test_the_web_pages_reach_the_services_only_through_their_http_apis() -> None:
    web = ROOT / "services" / "web"
    http = {str(p.relative_to(web)) for p in web.rglob("*.py") if "httpx" in imported_packages(p)}
    database = {
        str(p.relative_to(web)) for p in web.rglob("*.py") if "pymongo" in imported_packages(p)
    }
    assert http == {"clients.py"}
    # Its own database holds only the coordinators' accounts.
    assert database <= {"accounts.py", "accounts_cli.py", "app.py"}


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
    routes = [
        *(ROOT / "services").glob("*/api.py"),
        *(ROOT / "services").glob("*/*_api.py"),
        *(ROOT / "services").glob("*/webhooks.py"),
    ]
    for path in sorted(routes):
        tree = ast.parse(path.read_text())
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & storage
        if used:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert offenders == {}


def test_every_service_has_the_same_rooms() -> None:
    rooms = ("api.py", "app.py", "handlers.py", "service.py", "store.py", "views.py", "domain")
    missing = {
        name: [room for room in rooms if not (ROOT / "services" / name / room).exists()]
        for name in sorted(EVENT_SERVICES)
    }
    assert {k: v for k, v in missing.items() if v} == {}


def test_service_modules_and_functions_stay_small() -> None:
    too_long = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        if len(text.splitlines()) >= 400:
            too_long[where] = f"{len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long[f"{where}:{node.lineno} {node.name}"] = f"{length} lines"
    assert too_long == {}


def _defines(path: Path, dotted: str) -> bool:
    """Whether ``path`` defines ``dotted`` (a function, a class, or a class's method)."""
    scope: list[ast.stmt] = ast.parse(path.read_text()).body
    for part in dotted.split("."):
        found = [
            node
            for node in scope
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == part
        ]
        if not found:
            return False
        scope = found[0].body
    return True


def _readme_section(first: str, until: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(first)
    return text[start : text.index(until, start)]


def test_the_sign_up_path_in_the_readme_names_real_code_in_at_most_ten_hops() -> None:
    path = _readme_section("The path of a sign-up", "Where each business rule lives")
    hops = re.findall(r"^(\d+)\. ", path, flags=re.MULTILINE)
    assert hops == [str(n) for n in range(1, len(hops) + 1)]
    assert len(hops) <= 10
    named = re.findall(r"`((?:services|shared)/[\w/]+\.py)`\s+`([\w.]+)`", path)
    assert len(named) >= 14
    missing = [(f, name) for f, name in named if not _defines(ROOT / f, name)]
    assert missing == []


def test_the_business_rules_table_points_at_real_code() -> None:
    rules = _readme_section("Where each business rule lives", "- **Each service owns")
    named = re.findall(r"`((?:services|shared)/[\w/]+\.py)`\s+\(`([\w.]+)`", rules)
    assert len(named) >= 5
    missing = [(f, name) for f, name in named if not _defines(ROOT / f, name)]
    assert missing == []
