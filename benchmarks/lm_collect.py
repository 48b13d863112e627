"""Collect the language-model studies' runs into committed CSVs and the tables of benchmarks/RESULTS.md.

The studies are Hydra multiruns of the main CLI (docs/language_models.md)::

    continual -m +experiment=ckl_smollm2 strategy=ckl_vanilla,ckl_recadam,ckl_mixreview,ckl_lora,\
ckl_kadapter,ckl_modular,ckl_ltm_retrieval seed=0,1,2 hydra.sweep.dir=runs/lm/ckl_smollm2
    continual -m +experiment=infinite_lr schedule=infinite,repeated_cosine,constant,wsd seed=0,1,2 \
hydra.sweep.dir=runs/lm/infinite_lr

Their run folders are large and not committed; this reads every ``summary.json`` under
``--runs`` and writes one row per run, so every number in the tables can be checked against a
file in the repository:

- ``benchmarks/results/lm_ckl_runs.csv``: CKL runs (method, seed, IL / UL / NL before and after,
  FUAR, held-out loss, steps, parameters and trainable parameters, train and eval seconds);
- ``benchmarks/results/lm_cpt_runs.csv``: continual pre-training runs (schedule, seed, final
  loss per corpus, forgetting, adaptation);

and prints the two markdown tables (mean ± sd over seeds).

    python3 benchmarks/lm_collect.py [--runs runs/lm]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
METHOD_ORDER = ("ckl_vanilla", "ckl_recadam", "ckl_mixreview", "ckl_lora", "ckl_kadapter", "ckl_modular",
                "ckl_ltm_retrieval")
SCHEDULE_ORDER = ("infinite", "repeated_cosine", "constant", "wsd")


def _mean_sd(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n.d."
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _summaries(root: Path) -> list[dict]:
    """Every summary.json under ``root``, with ``_run``: its folder relative to ``root``."""
    out = []
    for p in sorted(root.rglob("summary.json")):
        out.append({**json.loads(p.read_text()), "_run": str(p.parent.relative_to(root))})
    return out


def ckl_rows(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        if s.get("protocol") != "knowledge":
            continue
        row = {"method": s["strategy"], "seed": s["seed"], "run": s.get("_run")}
        row.update({f"M0_{k}": v for k, v in s["initial_scores"].items()})
        row.update({f"M1_{k}": v for k, v in s["final_scores"].items()})
        row.update({"FUAR": s.get("FUAR"), "steps": s["steps"], "params": s["params"],
                    "trainable_params": s.get("trainable_params"), "train_s": s["train_seconds"],
                    "eval_s": s.get("eval_seconds")})
        rows.append(row)
    return rows


def cpt_rows(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        if s.get("protocol") != "corpus":
            continue
        order = s.get("corpora") or [k.split("/", 1)[1] for k in s["final_scores"]]
        row = {"schedule": s["schedule"], "seed": s["seed"], "corpora": "|".join(order),
               "replay_share": s.get("replay_share"),
               "steps": s["steps"], "final_avg_loss": s["final_avg_loss"],
               # the engine's forgetting (avg_forgetting, final minus adaptation loss, was dropped for it)
               "avg_forgetting": s["forgetting"]}
        row.update({f"final_{k}": s["final_loss"][k] for k in order})
        row.update({f"forgetting_{k}": s["forgetting_by_corpus"][k] for k in order[:-1]})
        row.update({f"adapt_{k}": s["adaptation_loss"][k] for k in order})
        rows.append(row)
    return rows


def ckl_table(rows: list[dict]) -> str:
    """Per method: IL / UL / NL exact match after training, FUAR, held-out loss (mean ± sd).

    ``IL at M0`` is the method's own initial row: below 100 where the method's added modules
    start random (K-Adapter, Modular), which FUAR's forgetting is measured from."""
    methods = sorted({r["method"] for r in rows}, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    base = {r["seed"]: r for r in rows if r["method"] not in ("ckl_kadapter", "ckl_modular")} or \
        {r["seed"]: r for r in rows}  # M0 is the base model on each seed's split
    lines = ["| method | seeds | IL at M0 | IL | UL1 | NL1 | FUAR | heldout loss | trainable | train s |",
             "|" + " --- |" * 10,
             f"| initial (M0) | {len(base)} | - | " + " | ".join(
                 _mean_sd([r[f"M0_{k}"] for r in base.values()]) for k in ("IL", "UL1", "NL1"))
             + " | - | " + _mean_sd([r["M0_heldout_loss"] for r in base.values()]) + " | - | - |"]
    for m in methods:
        runs = [r for r in rows if r["method"] == m]
        fuars = [r["FUAR"] for r in runs]
        nd = sum(v is None for v in fuars)
        cells = [_mean_sd([r["M0_IL"] for r in runs])]
        cells += [_mean_sd([r[f"M1_{k}"] for r in runs]) for k in ("IL", "UL1", "NL1")]
        cells.append(_mean_sd(fuars) + (f" ({nd} n.d.)" if nd and nd < len(fuars) else ""))
        cells.append(_mean_sd([r["M1_heldout_loss"] for r in runs]))
        trainable = {r.get("trainable_params") for r in runs} - {None}
        cells.append(f"{trainable.pop() / 1e6:.1f}M" if len(trainable) == 1 else "-")
        cells.append(f"{statistics.mean(r['train_s'] for r in runs):.0f}")
        lines.append(f"| {m} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpt_table(rows: list[dict]) -> str:
    """Per schedule: final loss per corpus, forgetting and adaptation (mean ± sd)."""
    names = rows[0]["corpora"].split("|")
    scheds = sorted({r["schedule"] for r in rows},
                    key=lambda n: (SCHEDULE_ORDER.index(n) if n in SCHEDULE_ORDER else 99, n))
    head = ("| schedule | seeds | " + " | ".join(f"final {n}" for n in names) + " | final avg | "
            + " | ".join(f"forgetting {n}" for n in names[:-1]) + " | avg forgetting | "
            + " | ".join(f"adapt {n}" for n in names) + " |")
    lines = [head, "|" + " --- |" * (4 + 3 * len(names) - 1)]
    for sc in scheds:
        runs = [r for r in rows if r["schedule"] == sc]
        cells = [_mean_sd([r[f"final_{n}"] for r in runs]) for n in names]
        cells.append(_mean_sd([r["final_avg_loss"] for r in runs]))
        cells += [_mean_sd([r[f"forgetting_{n}"] for r in runs]) for n in names[:-1]]
        cells.append(_mean_sd([r["avg_forgetting"] for r in runs]))
        cells += [_mean_sd([r[f"adapt_{n}"] for r in runs]) for n in names]
        lines.append(f"| {sc} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def joined_rows(rows: list[dict], paths: list[Path]) -> list[dict]:
    """Rows of committed CKL CSVs for (method, seed) pairs that ``rows`` lack, numbers parsed."""
    have = {(r["method"], int(r["seed"])) for r in rows}
    out = []
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if (r["method"], int(r["seed"])) in have:
                    continue
                row = {k: (None if v in ("", "None") else v) for k, v in r.items()}
                for k, v in row.items():
                    if k not in ("method", "experiment") and v is not None:
                        row[k] = float(v) if k != "seed" else int(v)
                out.append(row)
                print(f"joined from {path.name}: {r['method']} seed {r['seed']}")
    return out


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
    p.add_argument("--no-csv", action="store_true", help="print the tables only")
    p.add_argument("--suffix", default="", help="written as lm_<kind>_runs<suffix>.csv")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="a committed lm_ckl_runs*.csv whose (method, seed) rows the runs lack join the "
                        "CKL table (not the CSV written)")
    args = p.parse_args()
    if not args.runs.is_dir():
        raise SystemExit(f"no run folders under {args.runs}: run the studies first (docs/language_models.md)")
    summaries = _summaries(args.runs)
    for kind, rows, table in (("ckl", ckl_rows(summaries), ckl_table), ("cpt", cpt_rows(summaries), cpt_table)):
        if not rows:
            continue
        if not args.no_csv:
            write_csv(rows, OUT / f"lm_{kind}_runs{args.suffix}.csv")
        if kind == "ckl":
            rows = rows + joined_rows(rows, args.also)
        print(table(rows))


if __name__ == "__main__":
    main()
