"""The hyper-parameter search report: every trial of a sweep, sorted by its objective, the
best one marked.

A Hydra sweep writes ``multirun.yaml`` (its whole config, the sweeper's included) into the
sweep folder, and the Optuna sweeper also ``optimization_results.yaml`` (``best_params``,
``best_value``). Each trial is an ordinary run folder; its objective is the number the job
returned to the sweeper, named by ``objective`` in its summary.json (``score`` for runs that
predate the field: the final test score).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual.records import flatten_keys
from continual.report.format import MISSING, Cell, format_number, lower_is_better


@dataclass
class Search:
    """What the sweep searched: the objective's name, its direction, the searched keys, and
    the sweeper's own best trial when it wrote one."""

    objective: str
    maximize: bool
    params: list[str]
    sweeper: str = ""
    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a file cut short or not Hydra's: no search information
        return {}
    return loaded if isinstance(loaded, dict) else {}


def find_search(root: Path, runs: Sequence[Any], objective: str | None = None) -> Search | None:
    """The search under ``root``: an Optuna sweep (its ``multirun.yaml`` names the Optuna
    sweeper, or ``optimization_results.yaml`` exists), or any sweep when ``objective`` is
    given. None when there is no search to report."""
    sweeper = (_yaml(root / "multirun.yaml").get("hydra") or {}).get("sweeper") or {}
    results = _yaml(root / "optimization_results.yaml")
    target = str(sweeper.get("_target_", ""))
    if objective is None and "optuna" not in target.lower() and not results:
        return None
    ok = [r for r in runs if r.status == "ok"]
    name = objective or next((str(r.summary["objective"]) for r in ok if r.summary.get("objective")), "score")
    direction = str(sweeper.get("direction") or "").lower()
    score_name = next((r.score_name for r in ok), "accuracy")
    maximize = direction == "maximize" if direction in ("maximize", "minimize") \
        else not lower_is_better(name, score_name)
    params = list((sweeper.get("params") or sweeper.get("search_space") or {}).keys())
    if not params:  # a grid or a hand-made sweep: the keys that differ between trials
        params = sorted({part.split("=", 1)[0] for r in ok for part in r.setting.split(", ") if "=" in part})
    best_value = results.get("best_value")
    return Search(objective=name, maximize=maximize, params=params, sweeper=target.rsplit(".", 1)[-1],
                  best_params=dict(results.get("best_params") or {}),
                  best_value=float(best_value) if isinstance(best_value, (int, float)) else None)


def _trial_number(run: Any) -> int | None:
    job = (_yaml(run.path / ".hydra" / "hydra.yaml").get("hydra") or {}).get("job") or {}
    num = job.get("num")
    return int(num) if isinstance(num, int) else None


def _objective_value(run: Any, name: str) -> float:
    value = run.summary.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def trial_rows(search: Search, runs: Sequence[Any], percent: bool = False,
               rel: Any = str) -> tuple[list[str], list[list[Any]], list[dict[str, Any]]]:
    """The trials table: header, display rows (best trial first, its cells marked best; failed
    trials last) and the same rows as plain values for hparams.csv."""
    entries = []
    for run in runs:
        config = flatten_keys(run.summary.get("config") or {}) if run.status == "ok" else {}
        values = {k: config.get(k) for k in search.params}
        entries.append((run, _trial_number(run), values, _objective_value(run, search.objective)))
    finite = [e for e in entries if math.isfinite(e[3])]
    sign = -1.0 if search.maximize else 1.0
    finite.sort(key=lambda e: (sign * e[3], e[1] if e[1] is not None else 1 << 30))
    rest = sorted((e for e in entries if not math.isfinite(e[3])), key=lambda e: str(e[0].path))
    best_run = None
    if search.best_params:  # the sweeper's own pick, when one of the trials matches it
        best_run = next((e[0] for e in finite if all(_same(e[2].get(k), v) for k, v in search.best_params.items())
                         and (search.best_value is None or _same(e[3], search.best_value))), None)
    if best_run is None and finite:
        best_run = finite[0][0]
    score_name = next((r.score_name for r in runs if r.status == "ok"), "accuracy")
    header = ["trial", "best", search.objective, *search.params, "acc", "forgetting", "status", "run"]
    shown, plain = [], []
    for run, num, values, obj in [*finite, *rest]:
        best = run is best_run
        obj_cell = Cell(format_number(obj, search.objective, percent, score_name), best=best)
        shown.append([MISSING if num is None else num, "★" if best else "", obj_cell,
                      *[MISSING if values[k] is None else values[k] for k in search.params],
                      format_number(_objective_value(run, "acc"), "acc", percent),
                      format_number(_objective_value(run, "forgetting"), "forgetting", percent),
                      run.status, rel(run.path)])
        plain.append({"trial": "" if num is None else num, "best": int(best),
                      search.objective: obj if math.isfinite(obj) else "",
                      **{k: "" if values[k] is None else values[k] for k in search.params},
                      "status": run.status, "run": rel(run.path)})
    return header, shown, plain


def describe(search: Search, n_trials: int) -> str:
    """One sentence saying what was searched and how the table is sorted."""
    goal = "maximised" if search.maximize else "minimised"
    by = f" by {search.sweeper}" if search.sweeper else ""
    text = (f"{n_trials} trial(s){by}, objective `{search.objective}` {goal}; sorted best first, "
            f"the best trial marked ★.")
    if search.best_params:
        chosen = ", ".join(f"{k}={v}" for k, v in search.best_params.items())
        text += f" optimization_results.yaml: best {chosen}"
        text += f" (value {search.best_value:.6g})." if search.best_value is not None else "."
    return text
