"""The end-of-session sweep of matrix row 26 reads logs and span files alike."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests import canary


def test_the_sweep_counts_the_canary_in_logs_and_spans_and_nowhere_else() -> None:
    # Outside pytest's own temporary tree, which the session's sweep reads at the end.
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "traces").mkdir()
        (root / "traces" / "registration.jsonl").write_text(
            f'{{"name": "POST"}}\n{{"attributes": {{"who": "{canary.CANARY}"}}}}\n'
        )
        (root / "registration.log").write_text(f"ok\n{canary.CANARY}\n{canary.CANARY}\n")
        (root / "mail.eml").write_text(canary.CANARY)  # an e-mail may name the person
        assert canary.in_logs(root) == {"traces/registration.jsonl": 1, "registration.log": 2}
