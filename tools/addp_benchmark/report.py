"""Benchmark results and their markdown report: the result record, the
machine and library description, the table and ``--append``."""
import datetime
import os
import os.path as osp
import platform
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

#: The repository root (configs/, docs/ and tools/ live there).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The command line that wraps these benchmarks (memory runs start it as a subprocess).
TOOL = osp.join(ROOT, 'tools', 'benchmark.py')
DEFAULT_OUT = osp.join(ROOT, 'docs', 'benchmarks.md')
DEFAULT_ADDP_CONFIG = osp.join(ROOT, 'configs', 'addp',
                               'addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py')


@dataclass
class BenchResult:
    """What a benchmark returns: a title, settings and timed rows."""
    title: str
    settings: Dict[str, str]
    rows: List[Tuple[str, List[float]]] = field(default_factory=list)  # (name, seconds per run)
    derived: List[Tuple[str, float]] = field(default_factory=list)  # (name, seconds)
    notes: List[str] = field(default_factory=list)
    metrics: Dict[str, float] = field(default_factory=dict)  # e.g. peak memory (MB), images/s
    ok: bool = True  # False makes the command exit with status 1 (checks)


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def environment(device: torch.device) -> Dict[str, str]:
    """Machine and library versions for the report."""
    versions = {'python': platform.python_version(), 'torch': torch.__version__}
    for name in ('mmengine', 'mmcv', 'mmpretrain', 'timm'):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - optional in the report
            versions[name] = 'n/a'
    try:
        from addp_mm.version import __version__ as addp_version
        versions['addp_mm'] = addp_version
    except Exception:  # pragma: no cover
        versions['addp_mm'] = 'n/a'
    env = {
        'machine': f'{platform.system()} {platform.machine()}, {_cpu_model()}, '
                   f'{os.cpu_count()} logical CPUs visible',
        'torch threads': str(torch.get_num_threads()),
        'device': str(device) if device.type != 'cuda' else torch.cuda.get_device_name(device),
        'load average (1/5/15 min)': ' / '.join(f'{v:.2f}' for v in os.getloadavg()),
        'versions': ', '.join(f'{k} {v}' for k, v in versions.items()),
    }
    return env


def render(result: BenchResult, env: Dict[str, str]) -> str:
    """Markdown section: heading, settings, table, notes."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    lines = [f'## {result.title} ({stamp})', '']
    for k, v in list(env.items()) + list(result.settings.items()):
        lines.append(f'- **{k}:** {v}')
    lines += ['', '| operation | median (ms) | min (ms) | max (ms) | runs |',
              '| --- | ---: | ---: | ---: | ---: |']
    for name, times in result.rows:
        ms = [t * 1e3 for t in times]
        lines.append(f'| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | '
                     f'{max(ms):.1f} | {len(ms)} |')
    for name, sec in result.derived:
        lines.append(f'| {name} | {sec * 1e3:.1f} | | | derived |')
    if result.metrics:
        lines.append('')
        lines += [f'- **{k}:** {v:.2f}' for k, v in result.metrics.items()]
    if result.notes:
        lines.append('')
        lines += [f'{n}' for n in result.notes]
    return '\n'.join(lines) + '\n'


def append_report(path: str, text: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    new = not osp.exists(path) or osp.getsize(path) == 0
    with open(path, 'a') as f:
        if new:
            f.write('# addp_mm benchmarks\n\nAppended by `python tools/benchmark.py <name> --append`.\n')
        f.write('\n' + text)
