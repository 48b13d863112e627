"""FUAR (Jang et al. 2022, Sec. 3.3) on the paper's Table 2 rows and hand-made cases."""

import pytest

from continual.lm.fuar import format_fuar, fuar, fuar_multiphase

INITIAL = (24.17, 1.62, 1.88)  # T5-large before continued pre-training: IL, UL, NL


def _table2(il, ul, nl):
    il0, ul0, nl0 = INITIAL
    return fuar(il0, il, ul0, ul, nl0, nl)


def test_paper_table2_vanilla_row():
    assert _table2(12.89, 10.17, 3.77) == pytest.approx(1.08, abs=0.005)


def test_paper_table2_lora_row():
    assert _table2(16.58, 12.77, 4.52) == pytest.approx(0.55, abs=0.005)


def test_no_forgetting_gives_zero():
    assert fuar(20, 25, 0, 10, 0, 5) == 0.0


def test_no_gain_is_not_defined():
    assert fuar(20, 10, 5, 5, 3, 1) is None
    assert format_fuar(None) == "n.d."


def test_losses_on_updated_or_new_do_not_count_as_gains():
    # UL drops, NL rises by 4: only the NL gain counts
    assert fuar(10, 8, 5, 2, 0, 4) == pytest.approx(2 / 4)


def test_multiphase_sums_gaps_over_phases():
    # forgotten: phase 0 invariant 30->20 (10) + phase-1 knowledge 50->40 (10);
    # gained: corpus 1 UL 0->30, NL 0->20; corpus 2 UL 5->25, NL 0->0
    value = fuar_multiphase([(30, 20), (50, 40)], [(0, 30), (5, 25)], [(0, 20), (0, 0)])
    assert value == pytest.approx(20 / 70)
