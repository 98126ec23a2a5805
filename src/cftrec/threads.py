"""CPU threads for torch: by default, no more than the cores other work leaves free.

torch starts one compute thread per core whatever else the machine runs; on a busy machine those
threads wait for each other and decoding gets several times slower than with one thread
(BENCHMARKS.md, "CPU threads"). Every command that runs a model takes `--threads N`; without it
`default_threads()` decides.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.1  # how long the CPU use of other processes is measured


def usable_cores() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times(cores: list[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies of `cores` from /proc/stat; None where it cannot be read."""
    wanted = {f"cpu{core}" for core in cores}
    busy = total = 0
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                name, *fields = line.split()
                if name in wanted:
                    ticks = [int(value) for value in fields[:8]]  # user .. steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def busy_cores(cores: list[int], seconds: float = SAMPLE_SECONDS) -> float:
    """How many of `cores` other processes keep busy: their use over `seconds` (Linux: from
    /proc/stat, less this process's own), else the 1-minute load average."""
    before, own, start = _cpu_times(cores), time.process_time(), time.monotonic()
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times(cores)
        own, wall = time.process_time() - own, time.monotonic() - start
        if after is not None and after[1] > before[1]:
            busy = len(cores) * (after[0] - before[0]) / (after[1] - before[1])
            return max(0.0, busy - own / wall)
    try:
        return min(float(len(cores)), os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads() -> int:
    """`OMP_NUM_THREADS` when set; else the usable cores that other processes leave free,
    shared among the processes of a multi-process launch (LOCAL_WORLD_SIZE); at least 1."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) >= 1:
        return int(configured)
    cores = usable_cores()
    free = len(cores) - round(busy_cores(cores))
    processes = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(processes) if processes.isdigit() and int(processes) >= 1 else 1
    return max(1, free // processes)


def use_threads(threads: int | None = None) -> int:
    """Run torch with `threads` CPU threads (None: `default_threads()`); returns the number."""
    import torch

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads
