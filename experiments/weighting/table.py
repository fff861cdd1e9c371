"""Markdown tables of a weighting_study sweep: final per-domain eval loss (+ average and worst domain) and
what the weights did (mean ESS and mean relative weight per domain over the weighted steps).

    python experiments/weighting/table.py multirun_outputs/<date>/<time>
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METHODS = ("uniform", "linupper", "quadratic", "extremes", "adapt")


def load(sweep: Path, method: str) -> tuple[dict, list[dict]]:
    run = sweep / method
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, records


def main(sweep: Path) -> None:
    rows = {m: load(sweep, m) for m in METHODS if (sweep / m / "summary.json").is_file()}
    if not rows:
        raise SystemExit(f"no finished method runs under {sweep}")
    first = next(iter(rows.values()))[0]["final_eval"]
    domains = [k.removeprefix("eval/loss/") for k in first if k.startswith("eval/loss/")]
    print("Final eval loss per domain (lower is better); average = mean over domains, worst = max.\n")
    print("| method | " + " | ".join(domains) + " | average | worst | all tokens |")
    print("|---" * (len(domains) + 4) + "|")
    for method, (summary, _) in rows.items():
        ev = summary["final_eval"]
        per = [ev[f"eval/loss/{d}"] for d in domains]
        cells = " | ".join(f"{v:.4f}" for v in per)
        print(
            f"| {method} | {cells} | {statistics.fmean(per):.4f} | {max(per):.4f} | {ev['eval/loss']:.4f} |"
        )
    print("\nWeights over the weighted steps (relative scale: uniform = 1; ESS out of the batch size).\n")
    print("| method | mean ESS | mean min | mean max | " + " | ".join(f"w({d})" for d in domains) + " |")
    print("|---" * (len(domains) + 4) + "|")
    for method, (_, records) in rows.items():
        weighted = [r for r in records if r.get("weight/active") == 1.0]
        ess = statistics.fmean(r["weight/ess"] for r in weighted)
        lo = statistics.fmean(r["weight/min"] for r in weighted)
        hi = statistics.fmean(r["weight/max"] for r in weighted)
        dom = []
        for d in domains:
            vals = [r[f"weight/domain_mean/{d}"] for r in weighted if f"weight/domain_mean/{d}" in r]
            dom.append(f"{statistics.fmean(vals):.3f}" if vals else "-")
        print(f"| {method} | {ess:.2f} | {lo:.3f} | {hi:.3f} | " + " | ".join(dom) + " |")
    print(
        "\nWall time per run (s): " + ", ".join(f"{m} {s['wall_time_s']:.0f}" for m, (s, _) in rows.items())
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
