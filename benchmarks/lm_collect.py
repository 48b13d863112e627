"""Collect the language-model experiments' per-run results into CSV files that can be committed.

The run folders (``runs/lm/<experiment>/<method or schedule>/seed<k>/summary.json``) are large
and not committed; this writes one row per run, so every number in
``benchmarks/results/lm.md`` can be checked against a file in the repository:

- ``benchmarks/results/lm_ckl_runs.csv``: CKL runs (method, seed, IL / UL / NL before and after,
  FUAR, held-out loss, steps, trainable parameters, train seconds);
- ``benchmarks/results/lm_cpt_runs.csv``: continual pre-training runs (schedule, seed, final loss
  per corpus, forgetting, adaptation).

    python3 benchmarks/lm_collect.py [--runs runs/lm]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def _rows(root: Path, kind: str) -> list[dict]:
    rows = []
    for path in sorted(root.glob("*/*/seed*/summary.json")):
        s = json.loads(path.read_text())
        experiment = path.parts[-4]
        if kind == "ckl" and "final" in s:
            row = {"experiment": experiment, "method": s["method"], "seed": s["seed"]}
            row.update({f"M0_{k}": v for k, v in s["initial"].items()})
            row.update({f"M1_{k}": v for k, v in s["final"].items()})
            row.update({k: s.get(k) for k in ("FUAR", "epochs", "steps", "trainable_params", "train_s")})
            rows.append(row)
        elif kind == "cpt" and "schedule" in s:
            row = {"experiment": experiment, "schedule": s["schedule"], "seed": s["seed"],
                   "replay_share": s.get("replay_share"), "steps": s["steps"],
                   "final_avg_loss": s["final_avg_loss"], "avg_forgetting": s["avg_forgetting"]}
            row.update({f"final_{k}": v for k, v in s["final_loss"].items()})
            row.update({f"forgetting_{k}": v for k, v in s["forgetting"].items()})
            row.update({f"adapt_{k}": v for k, v in s["adaptation_loss"].items()})
            rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(f"{path}: {len(rows)} runs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/lm"))
    args = p.parse_args()
    if not args.runs.is_dir():
        raise SystemExit(f"no run folders under {args.runs}: run the experiments first (docs/language_models.md)")
    for kind in ("ckl", "cpt"):
        write_csv(_rows(args.runs, kind), OUT / f"lm_{kind}_runs.csv")


if __name__ == "__main__":
    main()
