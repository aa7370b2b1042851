"""The fault harness: real processes, faults injected into them, and the Jepsen-style tally.

Faults act on processes this test started (never another's): a database frozen with
SIGSTOP looks, from its clients, exactly like one whose network was black-holed (the
connections stay open and nothing answers); SIGCONT heals it.

``Tally`` scores a run the way Jepsen's total-queue checker does (reliability.md §9):
every attempted operation is recorded by its key with whether it was acknowledged,
every effect found afterwards by the key that caused it; lost = acknowledged without
an effect, unexpected = an effect nobody attempted, duplicated = a key with two effects.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@contextmanager
def frozen(process: subprocess.Popen) -> Iterator[None]:
    """The process stops answering (and its sockets stay open) until the block ends."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


@dataclass
class Tally:
    attempted: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    effects: Counter[str] = field(default_factory=Counter)

    def attempt(self, key: str, *, acknowledged: bool) -> None:
        self.attempted.add(key)
        if acknowledged:
            self.acknowledged.add(key)

    def found(self, keys: Iterable[str]) -> None:
        self.effects.update(keys)

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - set(self.effects)

    @property
    def unexpected(self) -> set[str]:
        return set(self.effects) - self.attempted

    @property
    def duplicated(self) -> set[str]:
        return {key for key, n in self.effects.items() if n > 1}

    def score(self) -> dict[str, int]:
        return {
            "attempted": len(self.attempted),
            "acknowledged": len(self.acknowledged),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
        }

    def assert_valid(self) -> None:
        score = self.score()
        assert (score["lost"], score["duplicated"], score["unexpected"]) == (0, 0, 0), score
