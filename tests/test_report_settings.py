"""The report names a sweep's lr schedules by the name chosen on the command line."""

import json

from continual.report.runs import find_runs, group_runs

COSINE = {"_target_": "continual.strategies.schedules.CosineSchedule", "eta_max": 1.0, "eta_min": 0.1}
INFINITE = {"_target_": "continual.strategies.schedules.InfiniteSchedule", "eta_max": 1.0, "eta_min": 0.1,
            "eta_const": 0.55, "anneal_fraction": 0.1}


def _run(root, name, schedule, options, seed, lr=0.05):
    folder = root / name
    folder.mkdir()
    summary = {"stream": "split_digits", "strategy": "er", "model": "mlp", "seed": seed, "acc": 0.5,
               "schedule": schedule, "config": {"seed": seed, "strategy": {"lr": lr}, "schedule": options}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_schedules_are_labelled_by_name_not_by_every_option(tmp_path):
    for seed in (0, 1):
        _run(tmp_path, f"cos{seed}", "cosine", COSINE, seed)
        _run(tmp_path, f"inf{seed}", "infinite", INFINITE, seed)
    groups = group_runs(find_runs(tmp_path))
    assert sorted(g.setting for g in groups) == ["schedule=cosine", "schedule=infinite"]
    assert all(len(g.runs) == 2 for g in groups)


def test_an_option_varied_within_one_schedule_still_splits_the_group(tmp_path):
    _run(tmp_path, "a", "infinite", INFINITE, 0)
    _run(tmp_path, "b", "infinite", {**INFINITE, "anneal_fraction": 0.0}, 0)
    _run(tmp_path, "c", "cosine", COSINE, 0)
    settings = sorted(g.setting for g in group_runs(find_runs(tmp_path)))
    assert settings == ["schedule=cosine, schedule.anneal_fraction=None",
                        "schedule=infinite, schedule.anneal_fraction=0.0",
                        "schedule=infinite, schedule.anneal_fraction=0.1"]
