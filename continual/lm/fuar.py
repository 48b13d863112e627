"""FUAR: Forgotten / (Updated + Acquired) knowledge Ratio of continual knowledge learning.

Jang et al., "Towards Continual Knowledge Learning of Language Models", ICLR 2022
(arXiv 2110.03215), Sec. 3.3. With Gap(T, M_a, M_b) = score(T, M_a) - score(T, M_b):

    FUAR = sum_{i=0}^{n-1} max(0, Gap(T^F_i, M_i, M_n))
           / sum_{i=1}^{n} [max(0, Gap(T^U_i, M_n, M_{i-1})) + max(0, Gap(T^A_i, M_n, M_{i-1}))]

T^F_i: knowledge that should be kept from phase i (T^F_0 = InvariantLAMA), T^U_i / T^A_i:
the updated / newly acquired knowledge of corpus D_i. The paper reports "n.d." (not
defined) when the denominator is 0; we return None then. Lower is better; FUAR < 1
means fewer facts forgotten than learned. For one phase this is
max(0, IL(M0) - IL(M1)) / [max(0, UL(M1) - UL(M0)) + max(0, NL(M1) - NL(M0))].
"""

from __future__ import annotations

from collections.abc import Sequence

from continual.types import ConfigError

Pair = tuple[float, float]


def fuar(il_before: float, il_after: float, ul_before: float, ul_after: float,
         nl_before: float, nl_after: float) -> float | None:
    """Single-phase FUAR from exact-match scores of M0 (before) and M1 (after); None if n.d."""
    return fuar_multiphase([(il_before, il_after)], [(ul_before, ul_after)],
                           [(nl_before, nl_after)])


def fuar_multiphase(retained: Sequence[Pair], updated: Sequence[Pair],
                    acquired: Sequence[Pair]) -> float | None:
    """Multi-phase FUAR; each pair is (score before, score after).

    retained[i] = (score of T^F_i at M_i, at M_n) for i = 0..n-1;
    updated[i] / acquired[i] = (score of T^U_{i+1} / T^A_{i+1} at M_i, at M_n) for the n
    corpora. Returns None (the paper's "n.d.") when nothing was updated or acquired.
    """
    if len(updated) != len(acquired):
        raise ConfigError(
            f"FUAR needs one (before, after) pair of updated and acquired scores per corpus; "
            f"got {len(updated)} updated and {len(acquired)} acquired")
    if not updated:
        raise ConfigError("FUAR needs at least one corpus (one updated and one acquired pair)")
    forgotten = sum(max(0.0, before - after) for before, after in retained)
    gained = sum(max(0.0, after - before) for before, after in updated)
    gained += sum(max(0.0, after - before) for before, after in acquired)
    if gained == 0:
        return None
    return forgotten / gained


def format_fuar(value: float | None, digits: int = 2) -> str:
    """FUAR as printed in tables: a number, or ``n.d.`` when not defined."""
    return "n.d." if value is None else f"{value:.{digits}f}"
