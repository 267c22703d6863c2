"""Figures of the comparison report: mean ± std learning curves and the penalty heat map."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402

from al_sim.report.colours import strategy_colours  # noqa: E402
from al_sim.report.stats import CurveStats  # noqa: E402

MAX_STEP_TICKS = 12  # label every logged step up to this many, else integer ticks
MAX_BANDS = 5  # std bands drawn when a panel has at most this many strategies (else: lines)
REFERENCE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.0, "zorder": 5}
BASELINE_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.5}


@dataclass(frozen=True)
class CurvePanel:
    """One setting's curves: per strategy, mean ± std across seeds; optional baseline."""

    title: str
    curves: Mapping[str, CurveStats]
    baseline: float | None = None
    x: Mapping[str, np.ndarray] | None = None  # per strategy: x values other than the steps


def comparison_curves(panels: Sequence[CurvePanel], metric: str, path: Path,
                      reference: str = "random", xlabel: str = "labelled images") -> Path:
    """Mean line and ±1 std band per strategy vs labelled images (or a panel's ``x``: then
    ``xlabel`` names it), one panel per setting."""
    cols = min(3, max(len(panels), 1))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.3 * rows), dpi=110,
                             squeeze=False)
    others = [n for p in panels for n in p.curves if n != reference]
    colors = strategy_colours(list(dict.fromkeys(others)))  # the same in every figure
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        for name in sorted(panel.curves, key=lambda n: (n == reference, n)):
            stats = panel.curves[name]
            style = REFERENCE_STYLE if name == reference else {"color": colors[name]}
            xs = stats.steps if panel.x is None else panel.x[name]
            ax.plot(xs, stats.mean, marker="o", markersize=3,
                    label=f"{name} (n={stats.n})", **style)
            if stats.n > 1 and (name == reference or len(panel.curves) <= MAX_BANDS):
                ax.fill_between(xs, stats.mean - stats.std, stats.mean + stats.std,
                                color=style["color"], alpha=0.12 if name == reference else 0.2,
                                linewidth=0)
        if panel.baseline is not None:
            ax.axhline(panel.baseline, label=f"full data ({panel.baseline:.3f})",
                       **BASELINE_STYLE)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        ticks = step_ticks([s for c in panel.curves.values() for s in c.steps])
        if panel.x is not None:
            pass  # expert time: matplotlib's own ticks
        elif ticks is not None:
            ax.set_xticks(ticks)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    legend: dict[str, Artist] = {}  # one legend beside the panels: it never hides a curve
    for ax in axes.ravel()[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.suptitle(f"{metric} vs {xlabel} (mean ± 1 std across seeds)", fontsize=11)
    fig.tight_layout()
    fig.legend(list(legend.values()), list(legend), loc="upper left",
               bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def step_ticks(steps: Sequence[float]) -> list[int] | None:
    """The logged labelled counts as x ticks (None when too many to label each one)."""
    unique = sorted({int(s) for s in steps})
    return unique if 0 < len(unique) <= MAX_STEP_TICKS else None


def penalty_heatmap(names: Sequence[str], matrix: np.ndarray, path: Path,
                    alpha: float = 0.05) -> Path:
    """Heat map of ``P[i, j]``: share of points where row i significantly beats column j."""
    n = len(names)
    size = max(4.0, 0.8 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size), dpi=110)
    shown = np.ma.masked_invalid(np.asarray(matrix, dtype=np.float64))
    image = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(names))
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
    ax.set_xlabel("loses (column)")
    ax.set_ylabel("wins (row)")
    ax.set_title(f"share of points where row beats column\n(paired t-test, alpha={alpha:g})",
                 fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
