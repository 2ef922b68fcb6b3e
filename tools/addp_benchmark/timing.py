"""Timing and memory helpers of the benchmarks: timed calls, per-phase
timers, peak memory (CUDA allocator or process RSS) and the FLOP counts and
bf16 matmul peak behind the model-FLOPs utilisation (MFU)."""
import resource
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional

import torch


def measure(fn: Callable[[], object], warmup: int, runs: int, device: torch.device) -> List[float]:
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls (seconds each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _median(times: List[float]) -> float:
    return statistics.median(times)


def _proc_status_kib(field_name: str) -> Optional[float]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field_name + ':'):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


_CPU_MEMORY_METHOD = ['ru_maxrss']


def peak_memory_start(device: torch.device) -> float:
    """Reference point for :func:`peak_memory_mb` (see the module docstring)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return float(torch.cuda.memory_allocated(device))
    rss = _proc_status_kib('VmRSS')
    if rss is not None and _reset_peak_rss() and _proc_status_kib('VmHWM') is not None:
        _CPU_MEMORY_METHOD[0] = 'VmHWM'
        return rss * 1024.
    _CPU_MEMORY_METHOD[0] = 'ru_maxrss'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.  # Linux: KiB


def peak_memory_mb(device: torch.device, start: float) -> float:
    """Peak memory above ``start`` in MiB."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    if _CPU_MEMORY_METHOD[0] == 'VmHWM':
        return (_proc_status_kib('VmHWM') * 1024. - start) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024. - start) / 2**20


def memory_method(device: torch.device) -> str:
    if device.type == 'cuda':
        return 'torch.cuda.max_memory_allocated above the memory allocated before the first step'
    if _CPU_MEMORY_METHOD[0] == 'VmHWM':
        return ('peak resident set size of the process (VmHWM, reset through /proc/self/clear_refs '
                'just before the first step) minus the resident size at that point')
    return ('growth of the process peak RSS (resource.getrusage ru_maxrss) from just before the '
            'first step, one configuration per process')


class PhaseTimer:
    """Accumulates the wall time of wrapped methods per phase name.

    Wrapping instance attributes keeps the model's own code path: the timed
    phases are whatever the model actually calls.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: Dict[str, float] = defaultdict(float)
        self.order: List[str] = []

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def wrap(self, obj: object, attr: str, name: str) -> None:
        orig = getattr(obj, attr)
        if name not in self.order:
            self.order.append(name)

        def timed(*args, **kwargs):
            self._sync()
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self._sync()
                self.totals[name] += time.perf_counter() - t0

        setattr(obj, attr, timed)

    def run(self, name: str, fn: Callable[[], object]) -> object:
        if name not in self.order:
            self.order.append(name)
        self._sync()
        t0 = time.perf_counter()
        out = fn()
        self._sync()
        self.totals[name] += time.perf_counter() - t0
        return out

    def reset(self) -> None:
        self.totals = defaultdict(float)


def bf16_matmul_flops(device: torch.device, size: Optional[int] = None, runs: int = 10) -> float:
    """Measured FLOP/s of a square bf16 matmul on ``device`` (the MFU reference)."""
    n = size or (8192 if device.type == 'cuda' else 1024)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    b = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    runs = runs if device.type == 'cuda' else 2
    times = measure(lambda: a @ b, warmup=2 if device.type == 'cuda' else 1, runs=runs,
                    device=device)
    return 2. * n ** 3 / _median(times)


def count_step_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of ``step`` (matmuls, convolutions, attention; forward
    and backward) counted with ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())
