"""Assemble benchmarks/RESULTS.md from the generated engine page and each study's section.

    python3 benchmarks/make_results.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = [  # (file, what it is); missing files are listed as not yet measured
    ("RESULTS_engine.md", "engine overhead, Avalanche, eval cost, scaling, strategy cost (issue 9, issue 2)"),
    ("results/memory_store.md", "FAISS store vs raw FAISS and torch (issue 3)"),
    ("results/ltm.md", "LTM vs ER at equal bytes (issue 3)"),
    ("results/onpro.md", "OnPro reproduction (issue 4)"),
    ("results/tame.md", "TAME (issue 5)"),
    ("results/lm.md", "CKL with FUAR and infinite LR schedules (issue 6, re-run through the one engine: issue 14)"),
    ("results/schedules_vision.md", "LR schedules on a vision stream (issue 14)"),
    ("results/threads.md", "the threads setting (issue 18)"),
    ("results/speed.md", "time to first result, the README's sweep against Avalanche, the adapter's cost (issue 18)"),
    ("results/adapter_accuracy.md", "the adapter against plain Avalanche over torch seeds (issue 18)"),
    ("results/avalanche_sweep_adapter.md", "The adapter's cost alone, a later run (issue 18, item 5)"),
    ("results/avalanche_sweep.md",
     "The README's sweep against plain Avalanche and the adapter's cost, latest run (issue 18)"),
]


def leak_section() -> str:
    path = HERE / "results" / "leak_check.json"
    if not path.exists():
        return ""
    rows = json.loads(path.read_text())
    lines = ["## Bounded resources (issue 8): peak RSS, short vs long run", "",
             "`python3 benchmarks/leak_check.py` (each strategy in its own process, task-free Permuted MNIST).", "",
             "| strategy | steps | peak RSS MB | steps | peak RSS MB | growth |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a, b = r["short"], r["long"]
        lines.append(f"| {r['strategy']} | {a['steps']} | {a['peak_rss_mb']:.1f} | {b['steps']} | "
                     f"{b['peak_rss_mb']:.1f} | {r['growth']:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parts = ["# Benchmark and reproduction results", "",
             "Measured on the project's 2-core CPU machines (no GPU) while other jobs shared the cores: "
             "absolute times are noisy, ratios come from competitors alternated in one process. "
             "Each section says its command and protocol.", ""]
    for name, what in SECTIONS:
        path = HERE / name
        parts.append(f"<!-- {name}: {what} -->")
        if path.exists():
            text = path.read_text()
            if text.startswith("# "):  # demote the generated page's title
                text = "#" + text
            elif not text.startswith("#"):  # a generated page without a title gets its description
                text = f"## {what}\n\n" + text
            parts.append(text.rstrip() + "\n")
        else:
            parts.append(f"## {what}\n\nNot measured yet ({name} is missing).\n")
    parts.append(leak_section())
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
