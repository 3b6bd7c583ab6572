"""Pictures for operators, drawn with matplotlib: reliability diagrams and metrics per version.

Every picture is a fresh ``matplotlib.figure.Figure`` rendered straight to bytes: no pyplot, so
no global figure state shared between the threads that serve requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal

from matplotlib.figure import Figure

from app.dashboard.schemas import ReliabilityBin, ReliabilityRead
from app.registry.schemas import ModelVersionRead

PictureFormat = Literal["svg", "png"]
MEDIA_TYPES: dict[str, str] = {"svg": "image/svg+xml", "png": "image/png"}

_CANDIDATE = "#1f77b4"
_PRODUCTION = "#ff7f0e"
_RECENT = "#2ca02c"
_DIAGONAL = "#9a9a9a"


@dataclass(frozen=True)
class _Series:
    key: str  # the SVG id prefix of this series' elements
    label: str
    color: str
    bins: Sequence[ReliabilityBin]


def render(figure: Figure, fmt: PictureFormat) -> bytes:
    """The figure as SVG or PNG bytes (no creation date: the same data gives the same picture)."""
    buffer = BytesIO()
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


def _series(data: ReliabilityRead) -> list[_Series]:
    series = []
    if data.validation is not None:
        production = data.validation.production_method or "production"
        series += [
            _Series(
                "candidate",
                f"v{data.version} {data.validation.method} (validation)",
                _CANDIDATE,
                data.validation.candidate,
            ),
            _Series(
                "production",
                f"compared with: {production} (validation)",
                _PRODUCTION,
                data.validation.production,
            ),
        ]
    if data.recent is not None and data.recent.n:
        series.append(
            _Series("recent", f"recent feedback (n={data.recent.n})", _RECENT, data.recent.bins)
        )
    return series


def _points(axes: Any, series: _Series) -> None:
    """Each filled bin as a point with its interval, unconnected: with a few labels per bin a
    line through them zig-zags, and the fitted map with its band already draws the curve."""
    filled = [b for b in series.bins if b.count]
    if not filled:
        return
    x = [b.mean_confidence for b in filled]
    y = [b.observed_rate for b in filled]
    # Runs stored before the bounds were clamped may hold a bound a rounding error past the
    # rate; matplotlib refuses negative error bars.
    below = [max(0.0, b.observed_rate - b.ci_low) for b in filled]
    above = [max(0.0, b.ci_high - b.observed_rate) for b in filled]
    curve = axes.errorbar(
        x,
        y,
        yerr=[below, above],
        fmt="o",
        color=series.color,
        capsize=3,
        markersize=5,
        elinewidth=1,
        label=series.label,
    )
    points, _caps, bars = curve.lines
    points.set_gid(f"{series.key}-points")
    for bar in bars:
        bar.set_gid(f"{series.key}-errorbars")


def _band(axes: Any, data: ReliabilityRead) -> None:
    """The version's map over raw scores with its pointwise band, shaded.

    Where the compared production model is the identity, its bins sit at the
    raw scores, so the band shows which of their zig-zags the fit believes.
    """
    band = data.band
    if band is None:
        return
    shade = axes.fill_between(band.score, band.low, band.high, color=_CANDIDATE, alpha=0.15)
    shade.set_gid("band")
    (line,) = axes.plot(
        band.score,
        band.fitted,
        color=_CANDIDATE,
        linewidth=1,
        alpha=0.7,
        label=f"v{data.version} map over raw score ({band.level:.0%} band)",
    )
    line.set_gid("band-fitted")


def _histogram(axes: Any, all_series: Sequence[_Series]) -> None:
    width = 0.09 / max(len(all_series), 1)
    for index, series in enumerate(all_series):
        for b in series.bins:
            (patch,) = axes.bar(
                b.lower + 0.005 + index * width,
                b.count,
                width=width,
                align="edge",
                color=series.color,
                alpha=0.8,
            )
            patch.set_gid(f"{series.key}-count-{b.bin}")


def reliability_figure(data: ReliabilityRead) -> Figure:
    """The diagonal, the fitted map and its band, each series' bins with their intervals, and
    bin counts underneath."""
    figure = Figure(figsize=(6.4, 6.0), dpi=100, layout="constrained")
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    axes = figure.add_subplot(grid[0])
    counts = figure.add_subplot(grid[1], sharex=axes)
    (diagonal,) = axes.plot(
        [0, 1], [0, 1], linestyle="--", color=_DIAGONAL, linewidth=1, label="perfectly calibrated"
    )
    diagonal.set_gid("diagonal")
    series = _series(data)
    _band(axes, data)
    for one in series:
        _points(axes, one)
    _histogram(counts, series)
    if not series:
        axes.text(0.5, 0.55, "no reliability data stored", ha="center", color="#555555")
    axes.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed rate (95% interval)")
    axes.set_title(f"{data.segment} v{data.version} · {data.method} · {data.status}", fontsize=11)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    axes.tick_params(labelbottom=False)
    counts.set(xlabel="predicted probability (10 equal-width bins)", ylabel="count")
    counts.grid(axis="y", alpha=0.3)
    return figure


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def metrics_figure(segment: str, versions: Sequence[ModelVersionRead]) -> Figure:
    """Validation ECE and Brier score of each version, the active one marked."""
    ordered = sorted(versions, key=lambda v: v.version)
    figure = Figure(figsize=(6.4, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    numbers = [v.version for v in ordered]
    for key, label, color in (("ece", "ECE", _CANDIDATE), ("brier", "Brier", _PRODUCTION)):
        (line,) = axes.plot(
            numbers,
            [_number(v.metrics.get(key)) for v in ordered],
            marker="o",
            color=color,
            label=f"{label} (validation)",
        )
        line.set_gid(f"{key}-line")
    for v in ordered:
        if v.status == "active":
            marker = axes.axvline(v.version, color=_RECENT, linestyle=":", label="active")
            marker.set_gid("active-version")
    axes.set_xticks(numbers)
    axes.set(xlabel="version", ylabel="score (lower is better)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"{segment}: validation metrics per version", fontsize=11)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return figure
