"""CPU threads for a request's one large forward: its context encoded in full.

Owns: the OpenMP spin default (`set_spin_count`: GOMP_SPINCOUNT, which libgomp reads once, when
torch loads it, so it is set before the process's first `import torch`: at the top of
`BuiltinInfiller.__init__` in the server, and by training/train.py before its torch import),
finding the cores that are idle at this moment (/proc/loadavg's count of runnable threads), and
`Fitter`, which sets torch's intra-op threads for each forward of a request (the base count plus
the idle cores for a forward of WIDE_MIN_TOKENS or more, the base count otherwise) and restores
the base count when the request ends.

Why: on a 2-core machine a second thread pays off only while the other core is free. Measured
here (int8, one 400-token context encode / one 16-token span step): 113-116 / 12.4 ms on one
thread; on two, with the other core idle, 69-80 / 9.2 ms; with the other core busy, two threads
took 266-270 ms for the encode under libgomp's default spinning, and 141 / 23-24 ms with a spin
count of 1000 (passive waiting, 124-128 ms busy, lost a third of the idle gain: 93-101 ms). So a
forward widens only onto cores idle when it starts, and waiting threads spin briefly. The span
steps stay on the base threads: in the LSP replay (bench/lsp_latency.py) the editor's client and
the server's own thread wake with every keystroke, and widening the steps too made line fills
slower (model time p50 100 ms against 73 ms for one thread, back to back).
"""

from __future__ import annotations

import os
import sys
from typing import Self

SPIN_COUNT = "1000"  # libgomp's GOMP_SPINCOUNT: waiting threads spin briefly, then sleep
MAX_THREADS = 4
SMALL_MACHINE_CPUS = 2  # at or below this, a base of one thread: a second one only contends
WIDE_MIN_TOKENS = 128  # smaller forwards (span steps, partial re-encodes) stay on the base threads


def set_spin_count() -> bool:
    """Set GOMP_SPINCOUNT to SPIN_COUNT unless the environment sets it. libgomp reads it when
    torch first loads it, so this acts only before the process's first `import torch`; returns
    whether that is still to come."""
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
    return "torch" not in sys.modules


def base_threads() -> int:
    """The automatic base thread count: 1 on small machines (the editor needs a core too), else
    half the cores, at most MAX_THREADS."""
    cpus = os.cpu_count() or 1
    return 1 if cpus <= SMALL_MACHINE_CPUS else min(MAX_THREADS, cpus // 2)


def apply(infiller, threads: int) -> None:
    """Set torch's threads for `infiller`: 0 is automatic (base_threads(), and a full encode
    widens onto the idle cores); N is exactly N threads, never widened."""
    import torch

    torch.set_num_threads(threads or base_threads())
    infiller.adaptive_threads = not threads  # a BuiltinInfiller (model/infill.py)


def idle_cores(loadavg: str = "/proc/loadavg") -> int:
    """Cores with nothing runnable on them now: CPUs minus the runnable threads (the caller
    included) in /proc/loadavg; 0 where that file is missing (not Linux) or unreadable."""
    try:
        with open(loadavg) as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, (os.cpu_count() or 1) - running)


def fitted(base: int, idle: int, cpus: int) -> int:
    """Threads for a forward: `base` plus the idle cores, at most min(MAX_THREADS, cpus), never
    fewer than `base`."""
    return max(base, min(MAX_THREADS, cpus, base + idle))


class Fitter:
    """`fit()` before each forward sets the threads for the idle cores; used as a context manager
    around one request, it restores the base count at the end. Disabled, it does nothing (a
    fixed thread setting, or a GPU)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.base = self.current = 1

    def __enter__(self) -> Self:
        if self.enabled:
            import torch

            self.base = self.current = torch.get_num_threads()
        return self

    def fit(self, tokens: int) -> int:
        """Set the threads for a forward over `tokens` tokens; return them."""
        if not self.enabled:
            return self.current
        n = self.base
        if tokens >= WIDE_MIN_TOKENS:
            n = fitted(self.base, idle_cores(), os.cpu_count() or 1)
        if n != self.current:
            import torch

            torch.set_num_threads(n)
            self.current = n
        return n

    def __exit__(self, *exc) -> None:
        if self.enabled and self.current != self.base:
            import torch

            torch.set_num_threads(self.base)
            self.current = self.base
