"""Small server-rendered SVG charts: lines over weeks or trials, horizontal bars, and a
run's timeline (no JavaScript, nothing inline for the CSP). Each holds only coordinates;
the macros of ``templates/_chart.html`` draw them, with a text alternative."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Series:
    name: str
    #: one value per x label; None where the series has no value
    values: list[float | None]
    css_class: str
    #: drawn as a line through its points (else points only)
    joined: bool = True


@dataclass
class LineChart:
    """Coordinates of a line chart in a ``width`` x ``height`` SVG viewBox."""

    labels: list[str]
    series: list[Series]
    width: int = 720
    height: int = 260
    margin_left: int = 56
    margin_right: int = 16
    margin_top: int = 16
    margin_bottom: int = 48
    y_max: float = field(init=False)

    def __post_init__(self) -> None:
        values = [v for s in self.series for v in s.values if v is not None]
        top = max(values, default=0.0)
        self.y_max = _nice_ceiling(top) if top > 0 else 1.0

    @property
    def plot_width(self) -> int:
        return self.width - self.margin_left - self.margin_right

    @property
    def plot_height(self) -> int:
        return self.height - self.margin_top - self.margin_bottom

    def x(self, index: int) -> float:
        if len(self.labels) <= 1:
            return self.margin_left + self.plot_width / 2
        return self.margin_left + index * self.plot_width / (len(self.labels) - 1)

    def y(self, value: float) -> float:
        return self.margin_top + self.plot_height * (1 - value / self.y_max)

    def points(self, series: Series) -> list[tuple[float, float, float]]:
        """(x, y, value) of the series' points that have a value."""
        return [
            (round(self.x(i), 1), round(self.y(v), 1), v)
            for i, v in enumerate(series.values)
            if v is not None
        ]

    def polyline(self, series: Series) -> str:
        return " ".join(f"{x},{y}" for x, y, _ in self.points(series))

    def y_ticks(self, n: int | None = None) -> list[tuple[float, str]]:
        """``n`` + 1 gridlines from 0 to ``y_max``; by default steps of 0.5 x 10^k for a y_max
        of 2 x 10^k, else 5 steps (0.2, 0.5 or 1 x 10^k): labels with few digits."""
        if n is None:
            mantissa = self.y_max / 10.0 ** math.floor(math.log10(self.y_max))
            n = 4 if round(mantissa, 6) == 2.0 else 5
        return [
            (round(self.y(self.y_max * i / n), 1), f"{self.y_max * i / n:.3g}")
            for i in range(n + 1)
        ]

    def x_ticks(self, most: int = 8) -> list[tuple[float, str]]:
        step = max(1, -(-len(self.labels) // most))
        return [
            (round(self.x(i), 1), label) for i, label in enumerate(self.labels) if i % step == 0
        ]


@dataclass(frozen=True)
class Bar:
    name: str
    value: float | None
    css_class: str
    #: the value as shown beside the bar (and in the chart's table)
    text: str = ""


@dataclass(frozen=True)
class BarGroup:
    label: str
    bars: list[Bar]


@dataclass
class BarChart:
    """Horizontal bars in groups (a metric and its bars: model, popular, previous), in a
    ``width``-wide SVG viewBox whose height grows with the bars. Bars share one scale from 0
    to a round ``x_max``; a bar without a value has no rectangle, only its text."""

    groups: list[BarGroup]
    width: int = 480
    label_width: int = 150
    value_width: int = 64
    bar_height: int = 16
    bar_gap: int = 4
    group_gap: int = 14
    margin_top: int = 8
    x_max: float = field(init=False)

    def __post_init__(self) -> None:
        values = [b.value for g in self.groups for b in g.bars if b.value is not None]
        top = max(values, default=0.0)
        self.x_max = _nice_ceiling(top) if top > 0 else 1.0

    @property
    def plot_width(self) -> int:
        return self.width - self.label_width - self.value_width

    def _group_height(self, group: BarGroup) -> int:
        n = len(group.bars)
        return n * self.bar_height + max(0, n - 1) * self.bar_gap

    @property
    def height(self) -> int:
        bars = sum(self._group_height(g) for g in self.groups)
        return self.margin_top * 2 + bars + max(0, len(self.groups) - 1) * self.group_gap

    def layout(self) -> list[tuple[BarGroup, float, list[tuple[Bar, float, float]]]]:
        """(group, y of the group's middle, [(bar, y, width) of its bars])."""
        result = []
        top = float(self.margin_top)
        for group in self.groups:
            rows = []
            for i, bar in enumerate(group.bars):
                y = top + i * (self.bar_height + self.bar_gap)
                width = self.plot_width * max(0.0, bar.value or 0.0) / self.x_max
                rows.append((bar, round(y, 1), round(width, 1)))
            middle = top + self._group_height(group) / 2
            result.append((group, round(middle, 1), rows))
            top += self._group_height(group) + self.group_gap
        return result


@dataclass(frozen=True)
class Span:
    """One bar of a timeline: seconds after the start of the run."""

    start: float
    end: float
    css_class: str
    title: str


@dataclass(frozen=True)
class Lane:
    label: str
    spans: list[Span]


@dataclass
class Timeline:
    """A run's steps as bars on a time axis (seconds since the run started), one lane per
    step; a step split into chunks has one bar per chunk in its lane."""

    lanes: list[Lane]
    width: int = 560
    label_width: int = 88
    margin_right: int = 16
    lane_height: int = 22
    margin_top: int = 8
    axis_height: int = 28
    #: a lane shows up to this many chunks as a thin bar each
    max_chunk_rows: int = 8
    x_max: float = field(init=False)
    tick_step: float = field(init=False)

    def __post_init__(self) -> None:
        top = max((s.end for lane in self.lanes for s in lane.spans), default=0.0)
        self.x_max, self.tick_step = _time_axis(top)

    @property
    def plot_width(self) -> int:
        return self.width - self.label_width - self.margin_right

    @property
    def height(self) -> int:
        return self.margin_top + len(self.lanes) * self.lane_height + self.axis_height

    @property
    def axis_y(self) -> int:
        return self.margin_top + len(self.lanes) * self.lane_height

    def x(self, seconds: float) -> float:
        return round(self.label_width + self.plot_width * seconds / self.x_max, 1)

    def bars(self) -> list[tuple[Lane, float, list[tuple[Span, float, float, float, float]]]]:
        """(lane, y of its top, [(span, x, y, width, height)]). A span is at least 1 unit
        wide, so that a step of a few milliseconds still shows; the chunks of a lane share
        its height, one thin bar each, up to ``max_chunk_rows`` (more overlap, see-through)."""
        result = []
        inner = self.lane_height - 6
        for i, lane in enumerate(self.lanes):
            top = float(self.margin_top + i * self.lane_height)
            rows = len(lane.spans) if len(lane.spans) <= self.max_chunk_rows else 1
            height = round(inner / rows, 1)
            spans = []
            for k, span in enumerate(lane.spans):
                left = self.x(span.start)
                width = max(1.0, round(self.x(span.end) - left, 1))
                y = round(top + 3 + (k % rows) * height, 1)
                spans.append((span, left, y, width, height))
            result.append((lane, top, spans))
        return result

    def ticks(self) -> list[tuple[float, str]]:
        """(x, label) every ``tick_step`` seconds, labelled in the axis' one unit."""
        unit, name = (
            (1, "s") if self.x_max <= 180 else (60, "min") if self.x_max <= 10_800 else (3600, "h")
        )
        n = round(self.x_max / self.tick_step)
        return [
            (self.x(i * self.tick_step), f"{i * self.tick_step / unit:g} {name}")
            for i in range(n + 1)
        ]


#: (axis end, tick step) in seconds: the round ends of a run's time axis.
_TIME_AXES = (
    (10, 2), (20, 5), (30, 10), (60, 15), (120, 30), (180, 60), (300, 60), (600, 120),
    (900, 300), (1200, 300), (1800, 600), (3600, 900), (7200, 1800), (10_800, 3600),
    (14_400, 3600), (21_600, 7200), (43_200, 10_800), (86_400, 21_600),
)  # fmt: skip


def _time_axis(seconds: float) -> tuple[float, float]:
    """The time axis (end, tick step) that holds ``seconds``: 106 s -> 2 min by 30 s."""
    for end, step in _TIME_AXES:
        if seconds <= end:
            return float(end), float(step)
    days = -(-seconds // 86_400)
    return days * 86_400, days * 21_600


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``."""
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value - 1e-12:
            return candidate
    return 10.0 ** (exponent + 1)
