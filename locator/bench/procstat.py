"""What a process or one of its threads has cost so far, read from /proc (Linux only).

Rates move with whatever else shares the cores; CPU seconds per unit of work do not (much),
so the benches report both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: Path) -> float:
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def threads_cpu_s(native_ids: Iterable[int]) -> float:
    """User + system CPU seconds of some threads of this process (``Thread.native_id``)."""
    pid = os.getpid()
    return sum(_stat_cpu(Path(f"/proc/{pid}/task/{tid}/stat")) for tid in native_ids)


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass(frozen=True)
class CpuShare:
    """CPU seconds each named process spent over one measured window, and the work done."""

    seconds: dict[str, float]
    units: int

    def us_per_unit(self, name: str) -> float:
        return self.seconds[name] * 1e6 / self.units if self.units else float("nan")

    @property
    def total_us(self) -> float:
        return sum(self.seconds.values()) * 1e6 / self.units if self.units else float("nan")

    def line(self) -> str:
        parts = [f"{name} {self.us_per_unit(name):.0f}" for name in self.seconds]
        return " + ".join(parts) + f" = {self.total_us:.0f} us"
