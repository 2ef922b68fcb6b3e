"""Micro-benchmarks for addp_mm (CPU or GPU), printed as a markdown table.

Usage::

    python tools/benchmark.py frozen [--batch-size 2] [--img-size 256] [--runs 5] [--append]

Each benchmark is a subcommand registered in ``BENCHMARKS``: a function that
adds its arguments to a sub-parser and a function that returns a
:class:`BenchResult`. The shared helpers time a callable (warm-up, then the
median of several runs), describe the machine and library versions, render a
markdown table and, with ``--append``, append it to ``docs/benchmarks.md``.
To add e.g. a training-step or sampling benchmark, write the two functions and
add one entry to ``BENCHMARKS``.

Benchmarks run with random weights (timings do not depend on the values), so
no checkpoint is needed.

Subcommands:
    frozen: VQGAN tokenizer encode / decode and MAGE token-predictor time at
        the official sizes (``configs/_base_/models/vqgan_f16_1024.py`` and
        ``mage_vit-base-p16.py`` by default).
"""
import argparse
import datetime
import os
import os.path as osp
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DEFAULT_OUT = osp.join(ROOT, 'docs', 'benchmarks.md')


# ----------------------------------------------------------------- helpers
@dataclass
class BenchResult:
    """What a benchmark returns: a title, settings and timed rows."""
    title: str
    settings: Dict[str, str]
    rows: List[Tuple[str, List[float]]] = field(default_factory=list)  # (name, seconds per run)
    derived: List[Tuple[str, float]] = field(default_factory=list)  # (name, seconds)
    notes: List[str] = field(default_factory=list)


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


def _median(times: List[float]) -> float:
    return statistics.median(times)


# -------------------------------------------------------- benchmark: frozen
def add_frozen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--tokenizer-config',
                   default=osp.join(ROOT, 'configs', '_base_', 'models', 'vqgan_f16_1024.py'))
    p.add_argument('--predictor-config',
                   default=osp.join(ROOT, 'configs', '_base_', 'models', 'mage_vit-base-p16.py'))
    p.add_argument('--mask-ratio', type=float, default=0.75,
                   help='fraction of masked tokens fed to the predictor')


def run_frozen(args: argparse.Namespace, device: torch.device) -> BenchResult:
    from mmengine.config import Config

    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    tok_cfg = Config.fromfile(args.tokenizer_config).tokenizer.copy()
    tok_cfg.checkpoint = None  # random weights
    tokenizer = MODELS.build(tok_cfg).to(device)
    f = tokenizer.downsample_factor
    if args.img_size % f:
        raise SystemExit(f'error: --img-size {args.img_size} is not a multiple of {f}')
    grid = args.img_size // f
    tp_cfg = Config.fromfile(args.predictor_config).token_predictor.copy()
    tp_cfg.checkpoint = None
    tp_cfg.num_tokens = grid * grid
    predictor = MODELS.build(tp_cfg).to(device)

    g = torch.Generator().manual_seed(0)
    B = args.batch_size
    images = torch.rand(B, 3, args.img_size, args.img_size, generator=g).to(device)
    with torch.no_grad():
        tokens, quant = tokenizer.encode(images)
    n_mask = int(round(args.mask_ratio * grid * grid))
    order = torch.rand(B, grid * grid, generator=g).argsort(1)
    mask = torch.zeros(B, grid * grid, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_mask], True)
    mask = mask.to(device)

    res = BenchResult(
        title=f'frozen tokenizer + token predictor, batch {B} at {args.img_size}x{args.img_size}',
        settings={
            'tokenizer': f'{osp.basename(args.tokenizer_config)} (ch {tok_cfg.ch}, ch_mult '
                         f'{tuple(tok_cfg.ch_mult)}, {tok_cfg.num_embeddings} codes), random weights',
            'predictor': f'{osp.basename(args.predictor_config)} (encoder {tp_cfg.depth}x'
                         f'{tp_cfg.embed_dims}, decoder {tp_cfg.decoder_depth}x'
                         f'{tp_cfg.decoder_embed_dims}), random weights, eval mode, '
                         f'{n_mask}/{grid * grid} tokens masked',
            'timing': f'{args.warmup} warm-up calls, then {args.runs} timed calls; torch.no_grad(), fp32',
        })
    with torch.no_grad():
        res.rows.append(('VQGAN encode (images -> indices + quantised map)',
                         measure(lambda: tokenizer.encode(images), args.warmup, args.runs, device)))
        res.rows.append(('VQGAN decode (quantised map -> images)',
                         measure(lambda: tokenizer.decode(quant), args.warmup, args.runs, device)))
        res.rows.append(('MAGE predictor predict_probs (one call)',
                         measure(lambda: predictor.predict_probs(tokens, mask), args.warmup,
                                 args.runs, device)))
    enc, dec, tp = (_median(t) for _, t in res.rows)
    res.derived.append(('frozen part of one ADDP training step (encode + 2x predictor + decode)',
                        enc + 2 * tp + dec))
    if args.note:
        res.notes.append(args.note)
    return res


#: name -> (add_arguments, run). Add new benchmarks here.
BENCHMARKS: Dict[str, Tuple[Callable, Callable]] = {
    'frozen': (add_frozen_args, run_frozen),
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('Subcommands:')[-1])
    sub = parser.add_subparsers(dest='benchmark', required=True)
    for name, (add_args, _) in BENCHMARKS.items():
        p = sub.add_parser(name)
        p.add_argument('--batch-size', type=int, default=2)
        p.add_argument('--img-size', type=int, default=256)
        p.add_argument('--warmup', type=int, default=2)
        p.add_argument('--runs', type=int, default=5)
        p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
        p.add_argument('--device', default='cpu')
        p.add_argument('--append', action='store_true', help='append the table to --out')
        p.add_argument('--out', default=DEFAULT_OUT, help='markdown file for --append')
        p.add_argument('--note', default='', help='free text added under the table')
        add_args(p)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = BENCHMARKS[args.benchmark][1](args, device)
    text = render(result, environment(device))
    print(text)
    if args.append:
        append_report(args.out, text)
        print(f'appended to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
