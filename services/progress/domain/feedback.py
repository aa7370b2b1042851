"""Feedback after a session, seen by the facilitator only in aggregate (pure).

Below :data:`MIN_ANSWERS` answers a session's feedback shows nothing but that it is
not enough yet: in a group of eight, two answers would all but name who gave them.
Comments are shown only past the same threshold, in an order that is not the order
they came in.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MIN_ANSWERS = 3
QUESTIONS = ("helpful", "safe")  # "the session helped me", "I felt safe to share"


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    helpful: int = Field(ge=1, le=5, description="1 (not at all) to 5 (very much)")
    safe: int = Field(ge=1, le=5, description="1 (not at all) to 5 (very much)")
    comment: str | None = Field(None, max_length=1000)


def aggregate(answers: list[dict[str, Any]], minimum: int = MIN_ANSWERS) -> dict[str, Any]:
    """One session's answers (each a FeedbackIn's fields) as the facilitator sees them."""
    count = len(answers)
    if count < minimum:
        return {"answers": count, "enough": False, "needed": minimum}
    out: dict[str, Any] = {"answers": count, "enough": True, "needed": minimum}
    for question in QUESTIONS:
        values = [a[question] for a in answers]
        spread = Counter(values)
        out[question] = {
            "mean": round(sum(values) / count, 2),
            "spread": {str(v): spread.get(v, 0) for v in range(1, 6)},
        }
    out["comments"] = sorted(a["comment"] for a in answers if a.get("comment"))
    return out
