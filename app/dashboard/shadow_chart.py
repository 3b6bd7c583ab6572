"""The champion/challenger picture: the confidence sequence's interval as records arrive."""

from __future__ import annotations

from matplotlib.figure import Figure

from app.shadow.schemas import ShadowComparisonRead

_BAND = "#1f77b4"
_ZERO = "#9a9a9a"


def shadow_figure(comparison: ShadowComparisonRead) -> Figure:
    """Bounds of the Brier difference (challenger - champion) over n, with 0 marked."""
    figure = Figure(figsize=(6.4, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    points = comparison.trace
    n = [point[0] for point in points]
    low = [point[1] for point in points]
    high = [point[2] for point in points]
    if points:
        band = axes.fill_between(
            n, low, high, step="post", color=_BAND, alpha=0.3, label="interval (anytime-valid)"
        )
        band.set_gid("shadow-interval")
        axes.set_xlim(left=0, right=max(n))
    zero = axes.axhline(0.0, color=_ZERO, linestyle="--", label="no difference")
    zero.set_gid("shadow-zero")
    axes.set(xlabel="records scored by both", ylabel="Brier difference")
    axes.set_title(
        f"{comparison.segment}: v{comparison.challenger_version} (challenger) - "
        f"v{comparison.champion_version} (champion), {comparison.status}",
        fontsize=11,
    )
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return figure
