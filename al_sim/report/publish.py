"""The comparison report's outputs: its files (figures, tables, the config used), what it
prints, the compare link, and what it logs to the sweep's parent run."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from al_sim.config.schema import CompareConf
from al_sim.report.build import Report, build_report
from al_sim.report.expert_time import time_markdown, write_time
from al_sim.report.figures import CurvePanel, comparison_curves, penalty_heatmap
from al_sim.report.output import output_folder
from al_sim.report.reader import RunReader, SweepRef
from al_sim.report.stop_replay import stop_markdown, stop_records
from al_sim.report.summary_runs import log_summary_runs
from al_sim.report.tables import markdown_report, write_csv_tables, write_records
from al_sim.tracking.contract import tracking_uri, where_to_look


def write_report(report: Report, conf: CompareConf, folder: Path) -> list[Path]:
    """Write the figure, tables and the config used into ``folder``; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    panels = [CurvePanel(s.label, report.curves[s.label], report.baselines.get(s.label, (None,))[0])
              for s in report.settings]
    files = [comparison_curves(panels, report.metric, folder / "learning_curves.png",
                               conf.reference),
             penalty_heatmap(report.names, report.penalty, folder / "penalty_matrix.png",
                             conf.alpha)]
    files += write_csv_tables(report.rows, report.curves, report.names, report.penalty,
                              report.metric, conf.reference, report.baselines, folder)
    text = markdown_report(report.rows, report.names, report.penalty, report.metric,
                           conf.reference, report.baselines, report.notes, conf.alpha)
    if report.time_rows:
        files += write_time(panels, report.time_x, report.time_rows, report.metric,
                            conf.reference, folder)
        text += "\n".join(time_markdown(report.time_rows, report.metric)) + "\n"
    (folder / "summary.md").write_text(text + "\n".join(["", *stop_markdown(report.stops,
                                                                            report.metric)]))
    files.append(write_records(folder / "stopping.csv", stop_records(report.stops)))
    selected = (f"# selected: experiment={report.ref.experiment} sweep_id={report.ref.sweep_id} "
                f"parent_run_id={report.ref.parent_run_id}\n")
    (folder / "compare.yaml").write_text(selected + OmegaConf.to_yaml(OmegaConf.structured(conf)))
    return [*files, folder / "summary.md", folder / "compare.yaml"]


def run_compare(conf: CompareConf, launch_dir: Path, reader: RunReader | None = None,
                ref: SweepRef | None = None) -> Report:
    """Build, print, write and log the report."""
    uri = tracking_uri(conf.tracking.uri, launch_dir)
    reader = reader or RunReader(uri)
    report = build_report(conf, reader, ref)
    folder = output_folder(conf, report.ref, uri, launch_dir)
    n_runs = sum(len(seeds) for s in report.settings for seeds in s.runs.values())
    what = f"sweep {report.ref.sweep_id}" if report.ref.sweep_id else "all runs"
    print(f"compare: {n_runs} finished runs of {what} (experiment {report.ref.experiment!r})")
    write_report(report, conf, folder)
    print(markdown_report(report.rows, report.names, report.penalty, report.metric,
                          conf.reference, report.baselines, [], conf.alpha))
    print("\n".join(stop_markdown(report.stops, report.metric)))
    if report.time_rows:
        print("\n".join(time_markdown(report.time_rows, report.metric)))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {folder}")
    compared = [run.run_id for setting in report.settings for run in setting.members]
    print(where_to_look(uri, report.ref.experiment_id, ui_port=conf.tracking.ui_port,
                        compared=compared))
    if conf.log_artifacts and report.ref.parent_run_id:
        reader.log_artifacts(report.ref.parent_run_id, folder, "compare")
        print(f"logged to MLflow run {report.ref.parent_run_id} (artifacts compare/)")
        ids = log_summary_runs(reader, report.ref)
        print(f"logged {len(ids)} summary run(s) (mean ± std per strategy, tag al_sim.role="
              "summary) under it")
    return report
