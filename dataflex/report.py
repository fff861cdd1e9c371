"""`dataflex-report`: a results table (markdown + CSV) and comparison plots for a sweep; plots for a run.

dataflex-report multirun_outputs/<date>/<time>            # -> <sweep>/report/report.{md,csv} + *.png
dataflex-report SWEEP_A SWEEP_B --out experiments/x/results   # several sweeps in one table
dataflex-report plots outputs/<date>/<time>               # (re)draw one run's plots/ from metrics.jsonl
dataflex-report ledger outputs/<date>/<time> [--bins 10]  # what was trained, by domain and stage, over time
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from dataflex.tracking.sweep import JobResult, collect_jobs


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


def swept_overrides(jobs: list[JobResult]) -> list[list[str]]:
    """Per job, only the overrides that differ between jobs (all of them when there is one job)."""
    if len(jobs) <= 1:
        return [list(j.overrides) for j in jobs]
    values: dict[str, set[str | None]] = {}
    for job in jobs:
        for key, _ in map(_split, job.overrides):
            values.setdefault(key, set())
    for key in values:
        for job in jobs:
            values[key].add(dict(map(_split, job.overrides)).get(key))
    varying = {k for k, v in values.items() if len(v) > 1}
    return [[o for o in j.overrides if _split(o)[0] in varying] for j in jobs]


def domains_of(jobs: list[JobResult]) -> list[str]:
    """Domains in the order the data lists them (first job that has them)."""
    seen: dict[str, None] = {}
    for job in jobs:
        for domain in job.domain_losses:
            seen.setdefault(domain, None)
    return list(seen)


def table_rows(jobs: list[JobResult]) -> list[dict[str, object]]:
    """One flat row per job: the CSV's content and the markdown table's source."""
    domains = domains_of(jobs)
    rows = []
    for job, swept in zip(jobs, swept_overrides(jobs)):
        worst_domain, worst = job.worst
        row: dict[str, object] = {
            "job": job.label,
            "status": job.status,
            "overrides": " ".join(swept),
            "all_overrides": " ".join(job.overrides),
        }
        losses = job.domain_losses
        row.update({f"eval_loss/{d}": losses.get(d, math.nan) for d in domains})
        row.update(
            {
                "eval_loss_avg": job.average_loss,
                "eval_loss_worst": worst,
                "worst_domain": worst_domain,
                "eval_loss_all": job.final_eval.get("eval/loss", math.nan),
                "eval_step": job.eval_step if job.eval_step is not None else "",
                "wall_time_s": job.wall_time_s,
                "samples_per_s": job.samples_per_s,
                "steps": job.steps if job.steps is not None else "",
                "error": job.error,
                "job_dir": str(job.job_dir),
            }
        )
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Losses to 4 decimals; the best (lowest) completed value of each loss column in bold."""
    loss_cols = [k for k in rows[0] if k.startswith("eval_loss/")] + ["eval_loss_avg", "eval_loss_worst"]
    best = {}
    for col in loss_cols:
        values = [r[col] for r in rows if r["status"] == "completed" and not math.isnan(r[col])]  # type: ignore[arg-type]
        best[col] = min(values) if values else None
    headers = (
        ["job", "overrides", "status"]
        + [c.removeprefix("eval_loss/") for c in loss_cols[:-2]]
        + ["avg", "worst", "eval step", "wall s", "samples/s"]
    )
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(headers) - 3)) + "|",
    ]
    for r in rows:
        job = str(r["job"])
        job = job if len(job) <= 60 else job[:59] + "…"  # the full path is in the CSV's job_dir column
        cells = [job.replace("|", "\\|"), f"`{r['overrides']}`" if r["overrides"] else "", str(r["status"])]
        for col in loss_cols:
            text = _fmt(r[col])
            if col == "eval_loss_worst" and r["worst_domain"]:
                text += f" ({r['worst_domain']})"
            cells.append(f"**{text}**" if best[col] is not None and r[col] == best[col] else text)
        cells += [str(r["eval_step"]), _fmt(r["wall_time_s"], 1), _fmt(r["samples_per_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    rows: list[dict[str, object]], sources: list[str], plots: list[Path], out_dir: Path
) -> str:
    failed = [r for r in rows if r["status"] != "completed"]
    counts = {
        s: sum(r["status"] == s for r in rows) for s in ("completed", "failed", "interrupted", "incomplete")
    }
    parts = [
        f"# DataFlex sweep report\n\nSource: {', '.join(f'`{s}`' for s in sources)}  \n"
        f"Jobs: {len(rows)} ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}). "
        "Columns: final eval loss per domain, their unweighted mean (avg) and the worst domain, "
        "the step of that eval (a job that did not complete shows its last eval after step 0); "
        "wall time and training samples/s from the job's summary.json.\n",
        markdown_table(rows),
    ]
    if failed:
        parts.append("\n## Jobs that did not complete\n")
        no_error = "no summary.json and no error recorded (killed or still running)"
        parts += [f"- `{r['job']}` ({r['status']}): {r['error'] or no_error}" for r in failed]
    if plots:
        parts.append("\n## Plots\n")
        parts += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in plots]
    return "\n".join(parts) + "\n"


def report(paths: list[str | Path], out_dir: str | Path | None = None, plots: bool = True) -> Path:
    """Writes report.md, report.csv (and comparison plots) into out_dir; returns the markdown path."""
    jobs = collect_jobs(list(paths))
    if not jobs:
        raise SystemExit(
            f"dataflex-report: no job dirs under {', '.join(map(str, paths))} (a job dir holds "
            ".hydra/, metrics.jsonl or summary.json); pass multirun_outputs/<date>/<time>."
        )
    out = Path(out_dir) if out_dir else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(jobs)
    write_csv(rows, out / "report.csv")
    written: list[Path] = []
    if plots:
        from dataflex.tracking.compare import comparison_plots

        written = comparison_plots(jobs, out)
    md = render_markdown(rows, [str(p) for p in paths], written, out)
    (out / "report.md").write_text(md, encoding="utf-8")
    return out / "report.md"


def _plots_main(argv: list[str]) -> int:
    from dataflex.tracking.plots import plot_run

    parser = argparse.ArgumentParser(
        prog="dataflex-report plots", description="(Re)draw a run's plots/*.png."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run dirs holding metrics.jsonl")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "metrics.jsonl").is_file():
            parser.error(f"{run_dir} has no metrics.jsonl; pass a run dir such as outputs/<date>/<time>.")
        for path in plot_run(run_dir):
            print(path)
    return 0


def ledger_summary(table, bins: int = 10) -> dict[str, object]:
    """What a run trained (its data ledger, `dataflex.train.ledger`): rows per domain and per stage (its name,
    without `key=value` parameters such as a mix step's proportion) in `bins` consecutive step ranges, the
    mean weight per domain, distinct samples and total rows."""
    import numpy as np

    steps = np.asarray(table["step"].to_numpy(zero_copy_only=False))
    domains = np.asarray(table["domain"].to_pylist(), dtype=object)
    from dataflex.train.ledger import stage_name

    stages = np.asarray([stage_name(s) for s in table["stage"].to_pylist()], dtype=object)
    weights = np.asarray(table["weight"].to_numpy(zero_copy_only=False), dtype=np.float64)
    domain_names, stage_names = sorted(set(domains.tolist())), sorted(set(stages.tolist()))
    ranges = [r for r in np.array_split(np.unique(steps), max(1, bins)) if len(r)]

    def counts(values: np.ndarray, names: list[str]) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for r in ranges:
            inside = values[(steps >= r[0]) & (steps <= r[-1])]
            row: dict[str, object] = {"steps": f"{r[0]}-{r[-1]}"}
            row.update({name: int((inside == name).sum()) for name in names})
            row["total"] = len(inside)
            rows.append(row)
        return rows

    return {
        "by_domain": counts(domains, domain_names),
        "by_stage": counts(stages, stage_names),
        "mean_weight": {d: float(weights[domains == d].mean()) for d in domain_names},
        "unique_samples": len(np.unique(np.asarray(table["sample_id"].to_numpy(zero_copy_only=False)))),
        "rows": table.num_rows,
    }


def _count_table(rows: list[dict[str, object]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines)


def _ledger_main(argv: list[str]) -> int:
    from dataflex.train.ledger import read_ledger

    parser = argparse.ArgumentParser(
        prog="dataflex-report ledger", description="What a run trained: its data ledger by domain and stage."
    )
    parser.add_argument("run_dir", type=Path, help="a run dir holding ledger/ (outputs/<date>/<time>)")
    parser.add_argument("--bins", type=int, default=10, help="number of consecutive step ranges (default 10)")
    args = parser.parse_args(argv)
    table = read_ledger(args.run_dir)
    if table.num_rows == 0:
        parser.error(
            f"{args.run_dir} has no data ledger (ledger/*.parquet); pass a run dir of a training run."
        )
    summary = ledger_summary(table, args.bins)
    weights = ", ".join(f"{d} {w:.3f}" for d, w in summary["mean_weight"].items())  # type: ignore[attr-defined]
    md = "\n".join(
        [
            f"# Data ledger of `{args.run_dir}`\n",
            f"{summary['rows']} trained rows, {summary['unique_samples']} distinct samples; "
            f"mean loss weight by domain: {weights}.\n",
            "## Samples per domain\n",
            _count_table(summary["by_domain"]),  # type: ignore[arg-type]
            "\n## Samples per stage\n",
            _count_table(summary["by_stage"]),  # type: ignore[arg-type]
        ]
    )
    out = args.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.md").write_text(md + "\n", encoding="utf-8")
    write_csv(summary["by_domain"], out / "ledger_by_domain.csv")  # type: ignore[arg-type]
    print(md)
    print(f"written: {out / 'ledger.md'} and {out / 'ledger_by_domain.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plots":
        return _plots_main(argv[1:])
    if argv and argv[0] == "ledger":
        return _ledger_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="dataflex-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sweeps", nargs="+", type=Path, help="sweep dirs (multirun_outputs/<date>/<time>) or run dirs"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <first sweep>/report)"
    )
    parser.add_argument("--no-plots", action="store_true", help="only the markdown and CSV tables")
    args = parser.parse_args(argv)
    md = report(args.sweeps, args.out, plots=not args.no_plots)
    print(md.read_text(encoding="utf-8"))
    print(f"written: {md} and {md.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
