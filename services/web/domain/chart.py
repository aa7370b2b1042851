"""A line chart of scores over time, as the geometry an inline SVG draws (pure).

Drawn on the server: no script, no library, nothing from another host. The points are
evenly spaced in the order the answers came (a week skipped is not a gap to read into);
the dashed lines are where the questionnaire's bands end, so a point is read against
the band it falls in. The same figures go in a table beside it, for a screen reader.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 320
HEIGHT = 180
LEFT = 34  # room for the scores on the left
RIGHT = 12
TOP = 12
BOTTOM = 30  # room for the first and last dates below


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    score: int
    when: str  # the date as the page writes it


@dataclass(frozen=True)
class Line:
    """A dashed line across the chart at ``value`` (a band's end), labelled on the left."""

    y: float
    value: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: float  # x of the chart's right edge
    bottom: float  # y of the chart's baseline (score 0)
    points: list[Point]
    lines: list[Line]
    top: int

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def line_chart(scores: list[tuple[str, int]], limits: list[int]) -> Chart | None:
    """``scores``: (date as written, score) in the order answered; ``limits``: each
    band's ``up_to``, the last being the highest score there can be. None: nothing yet."""
    if not scores:
        return None
    top = max([*limits, *(s for _, s in scores), 1])
    inner_w = WIDTH - LEFT - RIGHT
    inner_h = HEIGHT - TOP - BOTTOM
    base = TOP + inner_h

    def y_of(value: int) -> float:
        return base - inner_h * value / top

    step = inner_w / (len(scores) - 1) if len(scores) > 1 else 0
    offset = 0 if len(scores) > 1 else inner_w / 2
    points = [
        Point(x=LEFT + offset + i * step, y=y_of(score), score=score, when=when)
        for i, (when, score) in enumerate(scores)
    ]
    lines = [Line(y=y_of(v), value=v) for v in sorted(set(limits)) if 0 < v <= top]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        bottom=base,
        points=points,
        lines=lines,
        top=top,
    )
