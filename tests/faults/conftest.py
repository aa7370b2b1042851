"""What every fault test here shares: the ``faults`` mark, and a database of its own
that the test may freeze, kill and start again (never the session's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.devinfra import EmbeddedMongo


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """Its journal on disk, so a restart finds what it acknowledged (kill -9 included)."""
    db = EmbeddedMongo(data_dir=tmp_path / "db").start()
    try:
        yield db
    finally:
        db.stop()
