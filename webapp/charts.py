"""Small server-rendered SVG line charts (no JavaScript, nothing inline for the CSP)."""

from __future__ import annotations

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

    def y_ticks(self, n: int = 4) -> list[tuple[float, str]]:
        return [
            (round(self.y(self.y_max * i / n), 1), f"{self.y_max * i / n:.2f}")
            for i in range(n + 1)
        ]

    def x_ticks(self, most: int = 8) -> list[tuple[float, str]]:
        step = max(1, -(-len(self.labels) // most))
        return [
            (round(self.x(i), 1), label) for i, label in enumerate(self.labels) if i % step == 0
        ]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``."""
    import math

    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value - 1e-12:
            return candidate
    return 10.0 ** (exponent + 1)
