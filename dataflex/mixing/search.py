"""`dataflex-mixsearch`: sweep Dirichlet-sampled mixtures on a small proxy, fit a mixing law on the results,
propose a mixture under constraints, and write it as a static mixture preset.

    dataflex-mixsearch --runs 16 --steps 200 --out mixsearch/ --max-kl 0.5 --max-proportion 0.6 -- \\
        model.hidden_size=64 data=default                         # any dataflex-run overrides after `--`
    dataflex-run trainer=dynamic_mix trainer.static_mix=true trainer.train_step=2000 \\
        trainer.mixture_sample_rule=mixture trainer.mixture_proportions_file=mixsearch/mixture.json

1. Sample `--runs` mixtures from Dirichlet(concentration * K * prior) (`laws.sample_mixtures`; seeded) and
   write each as `<out>/mixtures/mix_NNN.json` (`{"domains", "proportions"}`, what
   `trainer.mixture_proportions_file` reads).
2. Run them as ONE Hydra multirun, `dataflex-run -m trainer=dynamic_mix trainer.static_mix=true
   trainer.mixture_proportions_file='<f0>','<f1>',...` into `<out>/sweep` (Hydra's launcher runs the jobs:
   pass `hydra/launcher=joblib` etc. after `--` to parallelise; no job runner of our own).
3. Read each finished job back (`dataflex.tracking.sweep`): the mixture it trained on (its
   `mixture_history.json`) and its final per-domain eval losses.
4. Fit the law (`laws.fit_law`; `--law auto` takes log-linear when every cross-validation fold keeps at least
   K + 2 runs, else linear), report the K-fold held-out error, and propose the mixture minimising the mean
   eval loss (`--target mean`) or one domain's (`--target <domain>`) under `--max-kl` / `--max-proportion`.
5. Write `<out>/mixture.json` (the preset) and `<out>/report.json` (law, held-out error, proposal, the best
   swept run). `--fit-only` skips 1-2 and fits the sweep already in `<out>/sweep`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .laws import cross_validate, fit_law, propose, sample_mixtures

PRESET = "mixture.json"
REPORT = "report.json"


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="dataflex-mixsearch", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", required=True, help="output folder (mixtures/, sweep/, mixture.json, report.json)"
    )
    p.add_argument("--runs", type=int, default=16, help="number of sampled mixtures (proxy runs)")
    p.add_argument("--steps", type=int, default=100, help="training steps of each proxy run")
    p.add_argument("--seed", type=int, default=0, help="seeds the mixture sampling")
    p.add_argument(
        "--concentration", type=float, default=1.0, help="Dirichlet concentration around the prior"
    )
    p.add_argument(
        "--prior", default="uniform", help="uniform, or comma-separated proportions (domain order)"
    )
    p.add_argument("--target", default="mean", help="mean (of the per-domain eval losses) or a domain name")
    p.add_argument("--law", default="auto", choices=("auto", "log_linear", "linear"))
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the held-out error")
    p.add_argument("--max-kl", type=float, default=None, help="KL(proposal || prior) bound")
    p.add_argument("--max-proportion", type=float, default=None, help="cap on every domain's proportion")
    p.add_argument("--fit-only", action="store_true", help="fit the sweep already in <out>/sweep")
    return p.parse_args(argv), overrides


def domain_names(overrides: Sequence[str]) -> list[str]:
    """The training domains of the data the overrides select (composed as dataflex-run would)."""
    from hydra import compose, initialize_config_dir

    import dataflex.cli  # noqa: F401  (registers the schemas and resolvers the config needs)
    from dataflex.config.paths import config_dir
    from dataflex.data.dataset_info import resolve_dataset_arg

    data_overrides = [o for o in overrides if o.startswith(("data=", "data.", "+data."))]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=data_overrides)
    infos = resolve_dataset_arg(cfg.data.dataset, cfg.data.get("dataset_dir"))
    return list(dict.fromkeys(i.domain for i in infos.values()))


def parse_prior(text: str, k: int) -> np.ndarray:
    if text == "uniform":
        return np.full(k, 1.0 / k)
    values = np.asarray([float(x) for x in text.split(",")], dtype=np.float64)
    if len(values) != k or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise SystemExit(f"--prior {text}: give {k} non-negative proportions summing to 1 (domain order).")
    return values


def write_mixtures(out: Path, names: list[str], mixtures: np.ndarray) -> list[Path]:
    folder = out / "mixtures"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, p in enumerate(mixtures):
        p = p / p.sum()  # exact sum for the trainer's 1e-6 check
        path = folder / f"mix_{i:03d}.json"
        path.write_text(json.dumps({"domains": names, "proportions": p.tolist()}))
        paths.append(path.resolve())
    return paths


def sweep_command(paths: list[Path], steps: int, sweep_dir: Path, overrides: Sequence[str]) -> list[str]:
    files = ",".join(f"'{p}'" for p in paths)
    return [
        sys.executable,
        "-m",
        "dataflex.cli",
        "-m",
        "trainer=dynamic_mix",
        "trainer.static_mix=true",
        f"trainer.train_step={steps}",
        "trainer.mixture_sample_rule=mixture",
        f"trainer.mixture_proportions_file={files}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def read_sweep(sweep_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(mixtures (N, K), per-domain final eval losses (N, K), job labels) of the completed jobs."""
    from dataflex.tracking.sweep import collect_jobs

    mixtures, losses, labels = [], [], []
    for job in collect_jobs([sweep_dir]):
        history = job.job_dir / "mixture_history.json"
        if job.status != "completed" or not history.is_file():
            print(f"dataflex-mixsearch: skipping {job.label} ({job.status}) {job.error}", file=sys.stderr)
            continue
        content = json.loads(history.read_text())
        by_name = dict(zip(content["domains"], content["updates"][0]["proportions"]))
        domain_loss = job.domain_losses
        missing = [n for n in names if n not in domain_loss]
        if missing:
            raise SystemExit(
                f"{job.label}: no final eval loss for domain(s) {missing}; the proxy runs need per-domain "
                "eval (eval data with those domains, trainer.eval_steps > 0)."
            )
        mixtures.append([by_name[n] for n in names])
        losses.append([domain_loss[n] for n in names])
        labels.append(job.label)
    if not mixtures:
        raise SystemExit(f"{sweep_dir}: no completed proxy run to fit.")
    return np.asarray(mixtures), np.asarray(losses), labels


def fit_and_propose(
    names: list[str], r: np.ndarray, y: np.ndarray, args: argparse.Namespace, prior: np.ndarray
) -> dict[str, Any]:
    k, n = len(names), len(r)
    folds = min(args.folds, n)
    kind = args.law
    if kind == "auto":
        kind = "log_linear" if n - -(-n // folds) >= k + 2 else "linear"
    report = cross_validate(r, y, kind, folds=folds)
    law = fit_law(r, y, kind)
    if args.target == "mean":
        weights = np.full(k, 1.0 / k)
    elif args.target in names:
        weights = np.eye(k)[names.index(args.target)]
    else:
        raise SystemExit(f"--target {args.target}: use mean or one of the domains {names}.")
    proposal = propose(law, prior, weights, max_kl=args.max_kl, max_proportion=args.max_proportion)
    observed = y @ weights
    best = int(np.argmin(observed))
    return {
        "domains": names,
        "target": args.target,
        "runs": n,
        "law": law.as_dict(),
        "held_out": report.as_dict(),
        "proposal": proposal.as_dict(names),
        "best_swept": {"proportions": dict(zip(names, r[best].tolist())), "objective": float(observed[best])},
        "constraints": {
            "prior": prior.tolist(),
            "max_kl": args.max_kl,
            "max_proportion": args.max_proportion,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out).resolve()
    sweep_dir = out / "sweep"
    names = domain_names(overrides)
    prior = parse_prior(args.prior, len(names))
    if not args.fit_only:
        if args.runs < 2:
            raise SystemExit("--runs must be >= 2 to fit anything.")
        paths = write_mixtures(out, names, sample_mixtures(prior, args.runs, args.concentration, args.seed))
        command = sweep_command(paths, args.steps, sweep_dir, overrides)
        print("dataflex-mixsearch: " + " ".join(command[2:]), flush=True)
        done = subprocess.run(command, env={**os.environ})
        if done.returncode != 0:
            print(
                f"dataflex-mixsearch: the sweep exited {done.returncode}; fitting what finished",
                file=sys.stderr,
            )
    r, y, _ = read_sweep(sweep_dir, names)
    result = fit_and_propose(names, r, y, args, prior)
    proposal = result["proposal"]["proportions"]
    (out / PRESET).write_text(json.dumps({"domains": names, "proportions": [proposal[n] for n in names]}))
    (out / REPORT).write_text(json.dumps(result, indent=1))
    held = result["held_out"]
    print(
        f"dataflex-mixsearch: {result['runs']} runs, {held['kind']} law, held-out MAE per domain "
        + ", ".join(f"{n}={m:.4f}" for n, m in zip(names, held["mae"]))
        + f"; proposal {', '.join(f'{n}={v:.3f}' for n, v in proposal.items())} "
        f"(predicted {result['proposal']['objective']:.4f}, "
        f"best swept {result['best_swept']['objective']:.4f})"
    )
    print(
        f"dataflex-mixsearch: train on it with trainer.mixture_sample_rule=mixture "
        f"trainer.mixture_proportions_file={out / PRESET}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
