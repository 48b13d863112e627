"""How many torch threads a run uses: ``threads=auto`` (``choose_threads``) reads the cores this
process may use (its CPU affinity, capped by a cgroup CPU quota) and how many of them are idle now.

Measured (benchmarks/results/threads.md): below a million parameters one thread is as fast as
two on this kind of machine, and a second thread only adds contention; a sweep's jobs (which
share the machine) get one thread each.
"""

from __future__ import annotations

import os
from typing import Any

#: below this many parameters a model trains as fast on one thread as on two (FINDINGS: the
#: default MLP, 0.27M), and a second thread only adds contention
SMALL_MODEL_PARAMS = 1_000_000


def choose_threads(setting: Any, n_params: int, in_sweep: bool) -> int | None:
    """The torch thread count of a run (None: leave torch's, as ``OMP_NUM_THREADS`` asked).

    ``threads=N`` uses N. ``auto``: what the user's ``OMP_NUM_THREADS`` says when it is set;
    else one thread for a job of a sweep (jobs run side by side) and for a small model; else
    the cores that are idle now (``idle_cores``: /proc/stat sampled over 0.1 s; elsewhere cores
    minus the 1-minute load average), at least 1 and at most ``usable_cores()``. Measured
    on 2 cores (benchmarks/RESULTS.md): with other processes running, a second thread makes a
    step 8-90x slower (ResNet-18 on 32x32 inputs: 0.38 s vs 3.1-3.7 s; the MLP: 0.7 ms vs 64 ms).
    """
    from continual.types import ConfigError

    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(f"threads must be auto or a number >= 1, got {setting!r}")
        return int(setting)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if in_sweep or n_params < SMALL_MODEL_PARAMS:
        return 1
    cores = usable_cores()
    idle = idle_cores()
    if idle is None:  # no /proc/stat (not Linux): the 1-minute load average, which lags by a minute
        idle = (os.cpu_count() or 1) - os.getloadavg()[0]
    return max(1, min(cores, round(idle)))


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's
    ``--cpus``, a Slurm or Kubernetes limit), which the affinity does not show: a job limited to 2
    CPUs on a 64-core node that ran 64 threads would be throttled to a crawl."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, int(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs allowed by this process's cgroup quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``
    over ``cpu.cfs_period_us``), the tightest along its cgroup path; None when there is none or it
    cannot be read."""
    from pathlib import Path

    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    v2_path, v1_path = None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpu" in parts[1].split(","):
            v1_path = parts[2]
    quotas: list[float] = []

    def walk(base: Path, path: str | None):  # the cgroup's folder and every parent up to the root
        folder = base / (path or "/").lstrip("/")
        while True:
            yield folder
            if folder == base or base not in folder.parents:
                return
            folder = folder.parent

    for folder in walk(Path(root), v2_path):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                quotas.append(float(quota) / float(period))
        except (OSError, ValueError):
            continue
    for folder in walk(Path(root) / "cpu", v1_path):
        try:
            quota = float((folder / "cpu.cfs_quota_us").read_text())
            period = float((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                quotas.append(quota / period)
        except (OSError, ValueError):
            continue
    return min(quotas) if quotas else None


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all the machine's cores from /proc/stat's first line; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])  # guest time is already counted in user time


def idle_cores(interval: float = 0.1) -> float | None:
    """How many of the machine's cores were idle over the next ``interval`` seconds (sampled from
    /proc/stat), or None where that cannot be read. Unlike the 1-minute load average it does not
    count processes that finished in the last minute (benchmarks/results/threads.md: right after
    other runs the load average read 1.53 on an idle 2-core machine, and ``auto`` picked 1 thread
    where 2 were 1.66x faster)."""
    import time

    before = _cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    return (os.cpu_count() or 1) * (after[0] - before[0]) / (after[1] - before[1])
