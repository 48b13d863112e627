"""report.tex: the table for a paper, one booktabs ``table`` with a block per stream and the
best mean of each stream in ``\\textbf``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.report.format import as_cell, mark_best, metric_cell
from continual.report.table import Tables, column_name

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(header: Sequence[str], rows: Sequence[Sequence[Any]], blocks: Sequence[Sequence[int]],
                caption: str, label: str = "tab:continual", n_text_columns: int = 1) -> str:
    """A booktabs ``table`` (``\\usepackage{booktabs}``): ``\\toprule``, a ``\\midrule``
    between blocks (streams), best cells in ``\\textbf``; the first ``n_text_columns``
    columns left-aligned, the numbers right-aligned."""

    def signed(text: str) -> str:  # a minus sign, not a hyphen
        return f"$-${latex_escape(text[1:])}" if len(text) > 1 and text[0] == "-" else latex_escape(text)

    def cell(v: Any) -> str:
        c = as_cell(v)
        text = signed(c.text) + (f" $\\pm$ {latex_escape(c.std)}" if c.std else "")
        return f"\\textbf{{{text}}}" if c.best else text

    align = "l" * n_text_columns + "r" * (len(header) - n_text_columns)
    lines = ["% written by `continual report`; needs \\usepackage{booktabs}",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(caption)}}}",
             f"\\label{{{label}}}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    for b, block in enumerate(blocks):
        if b:
            lines.append("\\midrule")
        lines += [" & ".join(cell(rows[i][j]) for j in range(len(header))) + " \\\\" for i in block]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def latex_report(t: Tables) -> str:
    """The text of report.tex: stream, method (strategy and setting), the model when several,
    and the metrics; its own cells, so the best of each stream is marked as LaTeX shows it."""
    several_models = len({g.model for g in t.groups}) > 1
    header = ["stream", "method", *(["model"] if several_models else []),
              *[column_name(m, t.percent, t.score_name) for m in t.metrics]]
    cells = [[g.stream, g.label, *([g.model] if several_models else []),
              *[metric_cell(r[f"{m}_mean"], r[f"{m}_std"], m, t.percent, g.runs[0].score_name) for m in t.metrics]]
             for g, r in zip(t.groups, t.rows)]
    mark_best(cells, t.blocks)
    seeds = sorted({len(g.runs) for g in t.groups})
    caption = (f"Mean ± sample std over each row's runs (n = {', '.join(map(str, seeds))}); best of each "
               f"stream in bold; - = not measured or undefined.")
    text = latex_table(header, cells, t.blocks, caption, n_text_columns=3 if several_models else 2)
    return text.replace("Mean ± sample std", "Mean $\\pm$ sample std")


def write_latex(t: Tables) -> Path:
    """Write report.tex; returns its path."""
    path = t.out_dir / "report.tex"
    path.write_text(latex_report(t))
    return path
