"""Tables of the comparison report: CSV (full precision) and Markdown (for people)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from al_sim.report.stats import CurveStats, SummaryRow
from al_sim.tracking.contract import lower_is_better


def short_name(metric: str) -> str:
    """``test/balanced_accuracy`` -> ``balanced_accuracy`` (a CSV-friendly column stem)."""
    return metric.removeprefix("test/").replace("/", "_")


def _num(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float | np.floating) else str(value)


def summary_records(rows: Sequence[SummaryRow], metric: str, reference: str,
                    baselines: Mapping[str, tuple[float, int]]) -> list[dict[str, str]]:
    """One CSV record per row; floats at full precision, missing values empty."""
    records = []
    for row in rows:
        rec = {"setting": row.setting, "strategy": row.strategy, "metric": metric,
               "n_seeds": str(len(row.seeds)), "seeds": ";".join(row.seeds)}
        for key, (mean, std) in row.finals.items():
            rec[f"final_{short_name(key)}_mean"] = _num(mean)
            rec[f"final_{short_name(key)}_std"] = _num(std)
        test = row.test
        rec.update({
            "aulc_mean": _num(row.aulc[0]), "aulc_std": _num(row.aulc[1]),
            "baseline": _num(baselines.get(row.setting, (None,))[0]),
            "target": _num(row.target), "labels_to_target": _num(row.labels_to_target),
            "seeds_reaching_target": str(row.seeds_reaching) if row.target is not None else "",
            "reference": reference,
            "n_pairs": str(test.n_pairs) if test else "",
            "aulc_diff_mean": _num(test.mean_diff) if test else "",
            "ttest_t": _num(test.t_stat) if test else "",
            "ttest_p": _num(test.t_p) if test else "",
            "wilcoxon_p": _num(test.wilcoxon_p) if test else "",
        })
        records.append(rec)
    return records


def write_records(path: Path, records: Sequence[Mapping[str, str]]) -> Path:
    """A CSV of ``records`` (header: their keys, in first-seen order)."""
    return _write(path, list(dict.fromkeys(k for rec in records for k in rec)), records)


def _write(path: Path, header: Sequence[str], records: Sequence[Mapping[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_csv_tables(rows: Sequence[SummaryRow], curves: Mapping[str, Mapping[str, CurveStats]],
                     names: Sequence[str], penalty: np.ndarray, metric: str, reference: str,
                     baselines: Mapping[str, tuple[float, int]], folder: Path) -> list[Path]:
    """Write ``summary.csv``, ``curves.csv`` and ``penalty_matrix.csv`` into ``folder``."""
    records = summary_records(rows, metric, reference, baselines)
    header = list(dict.fromkeys(k for rec in records for k in rec))
    files = [_write(folder / "summary.csv", header, records)]
    curve_records = [
        {"setting": label, "strategy": name, "n_labeled": str(int(step)), "n_seeds": str(st.n),
         f"{short_name(metric)}_mean": _num(float(mean)), f"{short_name(metric)}_std":
         _num(float(std))}
        for label, by_name in curves.items() for name, st in by_name.items()
        for step, mean, std in zip(st.steps, st.mean, st.std, strict=True)]
    files.append(_write(folder / "curves.csv", ["setting", "strategy", "n_labeled", "n_seeds",
                                                f"{short_name(metric)}_mean",
                                                f"{short_name(metric)}_std"], curve_records))
    matrix = [{"wins \\ loses": a, **{b: _num(float(penalty[i, j])) for j, b in enumerate(names)}}
              for i, a in enumerate(names)]
    files.append(_write(folder / "penalty_matrix.csv", ["wins \\ loses", *names], matrix))
    return files


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _p(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3g}"


def _to_target(row: SummaryRow) -> str:
    if row.target is None:
        return "–"
    reached = f"{row.seeds_reaching}/{len(row.seeds)} seeds"
    label = "not reached" if row.labels_to_target is None else str(row.labels_to_target)
    return f"{label} ({reached})"


def markdown_report(rows: Sequence[SummaryRow], names: Sequence[str], penalty: np.ndarray,
                    metric: str, reference: str, baselines: Mapping[str, tuple[float, int]],
                    notes: Sequence[str], alpha: float) -> str:
    """The summary tables and the penalty matrix as Markdown."""
    out = [f"# Strategy comparison: {metric}", ""]
    if lower_is_better(metric):
        out += [f"{metric} is lower-is-better: targets are reached from above, a negative "
                "Δ AULC is an improvement and the penalty matrix counts lower curves as wins.", ""]
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        finals = list(mine[0].finals)
        out += [f"## {setting}", ""]
        if setting in baselines:
            value, n = baselines[setting]
            out.append(f"full-data baseline {metric}: {value:.4f} ({n} run{'s' * (n > 1)})  ")
        target = mine[0].target
        out += [(f"labels to target: none (no full-data baseline of this data and no "
                 f"target_value); add budget=full runs, or set target_value=<{metric}>")
                if target is None else
                f"labels to target: first labelled count where the mean {metric} reaches "
                f"{target:.4f}", ""]
        head = ["strategy", "seeds", *(f"final {short_name(k)}" for k in finals),
                f"AULC ({short_name(metric)})", "labels to target",
                f"Δ AULC vs {reference}", "paired t p", "Wilcoxon p", "pairs"]
        out += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in mine:
            t = r.test
            cells = [r.strategy, str(len(r.seeds)), *(_pm(*r.finals[k]) for k in finals),
                     _pm(*r.aulc), _to_target(r),
                     "–" if t is None else f"{t.mean_diff:+.4f}",
                     _p(t.t_p if t else None), _p(t.wilcoxon_p if t else None),
                     "–" if t is None else str(t.n_pairs)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Penalty matrix", "",
            f"Share of labelled counts (averaged over settings) where the row strategy beats the "
            f"column one: two-sided paired t-test across seeds, p < {alpha:g}, mean difference "
            f"{'below' if lower_is_better(metric) else 'above'} zero.", "",
            "| wins \\ loses | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for i, name in enumerate(names):
        cells = ["–" if math.isnan(v) else f"{v:.2f}" for v in penalty[i]]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    if notes:
        out += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(out) + "\n"
