"""CPU seconds used by processes, read from /proc (Linux), so the benchmark can say where the time goes."""

from __future__ import annotations

import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (0.0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds_of_command(name: str) -> float:
    """User + system CPU seconds of every process whose command name is `name` (e.g. the PostgreSQL server's
    backends, which share the machine with the mesh but are not its children)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != name:
                    continue
        except OSError:
            continue
        total += cpu_seconds(int(entry))
    return total


def _status_field(pid: int, name: str) -> int:
    """An integer field of /proc/<pid>/status (its first number; 0 when the process or field is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` in MiB (VmRSS; 0.0 when it is gone)."""
    return _status_field(pid, "VmRSS") / 1024


def thread_count(pid: int) -> int:
    """Threads of `pid` (0 when it is gone)."""
    return _status_field(pid, "Threads")


def open_fds(pid: int) -> int:
    """File descriptors `pid` has open (sockets included; 0 when it is gone or not ours to read)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every core; idle and iowait excluded), so a phase can say
    how much CPU went to processes it does not list (another program running beside the benchmark)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS
