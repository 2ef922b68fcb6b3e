"""Benchmark ``compare``: the plain fp32, optimised fp32 and optimised bf16
paths of ``train`` / ``sample`` side by side in one process, with the peak
memory of each from a subprocess and the speed-up targets."""
import argparse
import datetime
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Tuple

import torch

from .report import TOOL, environment
from .timing import _median, memory_method
from .train_sample import (SampleBench, TrainBench, _bench_result, _collect, add_train_args,
                           apply_config)


#: (label, preset, dtype) of the side-by-side comparison; the first is the baseline.
COMPARE_CONFIGS: List[Tuple[str, str, str]] = [
    ('plain fp32 eager', 'plain', 'fp32'),
    ('optimised fp32', 'fast', 'fp32'),
    ('optimised bf16', 'fast', 'bf16'),
]
#: (benchmark, row, label, config index, minimum speed-up over the plain path) reported by compare.
TARGETS = [
    ('train', '**training step (total)**', 'training step, optimised fp32', 1, 1.3),
    ('train', '**training step (total)**', 'training step, bf16', 2, 5.0),
    ('sample', 'FULL', 'full sampling run, optimised fp32', 1, 1.3),
    ('sample', 'FULL', 'full sampling run, bf16', 2, 5.0),
]


def add_compare_args(p: argparse.ArgumentParser) -> None:
    add_train_args(p)
    p.add_argument('--what', default='train,sample', help='comma list of train, sample')
    p.add_argument('--no-memory', action='store_true',
                   help='skip the per-configuration peak-memory subprocesses')
    p.add_argument('--timeout', type=int, default=3600, help='seconds per memory subprocess')


def _memory_child(args, bench: str, preset: str, dtype: str, out: str) -> List[str]:
    cmd = [sys.executable, TOOL, bench, '--config', args.config, '--preset', preset,
           '--dtype', dtype, '--batch-size', str(args.batch_size), '--warmup', '0', '--runs', '1',
           '--device', args.device, '--seed', str(args.seed), '--steps', str(args.steps),
           '--json', out, '--full-runs', '0', '--full-warmup', '0']
    if bench == 'train':
        cmd += ['--mask-ratio', str(args.mask_ratio), '--mask-ratio-next', str(args.mask_ratio_next)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    if args.compile:
        cmd += ['--compile']
    return cmd


def _interleaved(bench, args, what: str) -> Tuple[Dict[int, List[Dict[str, float]]], Dict[int, List[float]], Dict[int, dict]]:
    """Run every configuration on the same model, interleaved (ABC, CBA, ...)
    so that load changes on a shared machine hit all configurations alike."""
    n = len(COMPARE_CONFIGS)
    steps: Dict[int, List[Dict[str, float]]] = defaultdict(list)
    fulls: Dict[int, List[float]] = defaultdict(list)
    applied: Dict[int, dict] = {}

    def use(ci):
        _, preset, dtype = COMPARE_CONFIGS[ci]
        applied[ci] = apply_config(bench.model, preset, dtype, args.compile)
        return dtype

    for ci in range(n):  # warm-up of every configuration
        dtype = use(ci)
        for _ in range(args.warmup):
            bench.step(dtype)
    for r in range(args.runs):
        order = list(range(n)) if r % 2 == 0 else list(reversed(range(n)))
        for ci in order:
            dtype = use(ci)
            print(f'[compare] {what} run {r + 1}/{args.runs}: {COMPARE_CONFIGS[ci][0]}', flush=True)
            steps[ci].append(bench.step(dtype))
    if what == 'sample':
        for r in range(args.full_runs):
            order = list(range(n)) if r % 2 == 0 else list(reversed(range(n)))
            for ci in order:
                dtype = use(ci)
                print(f'[compare] full sampling run {r + 1}/{args.full_runs}: {COMPARE_CONFIGS[ci][0]}',
                      flush=True)
                fulls[ci].append(bench.full(dtype))
    return steps, fulls, applied


def run_compare(args: argparse.Namespace, device: torch.device) -> str:
    what = [w.strip() for w in args.what.split(',') if w.strip()]
    bad = [w for w in what if w not in ('train', 'sample')]
    if bad or not what:
        raise SystemExit(f'error: --what takes train and/or sample, got {args.what!r}')
    if args.preset != 'fast' or args.dtype != 'fp32':
        print('[compare] note: --preset/--dtype are ignored; compare runs every configuration')
    results: Dict[Tuple[str, int], dict] = {}
    loads = [os.getloadavg()[0]]
    for name in what:
        bench = TrainBench(args, device) if name == 'train' else SampleBench(args, device)
        steps, fulls, applied = _interleaved(bench, args, name)
        for ci in range(len(COMPARE_CONFIGS)):
            rows = _collect(steps[ci], bench.row_order())
            metrics = {}
            if fulls.get(ci):
                rows.append(('FULL', fulls[ci]))
                metrics['images/s'] = args.batch_size / _median(fulls[ci])
            results[(name, ci)] = dict(rows=rows, metrics=metrics, switches=applied[ci],
                                       full_name=getattr(bench, 'full_name', None))
        results[(name, 'settings')] = bench.settings()
        results[(name, 'model')] = _bench_result('', args, bench, {}, {}).settings
        if name == 'train' and not all(math.isfinite(v) for v in bench.losses):
            raise SystemExit(f'error: non-finite training loss {bench.losses}')
        del bench
        loads.append(os.getloadavg()[0])
    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            for name in what:
                for ci, (label, preset, dtype) in enumerate(COMPARE_CONFIGS):
                    out = osp.join(tmp, f'{name}_{ci}.json')
                    print(f'[compare] peak memory: {name} / {label} (subprocess)', flush=True)
                    proc = subprocess.run(_memory_child(args, name, preset, dtype, out),
                                          capture_output=True, text=True, timeout=args.timeout)
                    if proc.returncode != 0:
                        raise SystemExit(f'error: memory run {name} / {label} failed:\n'
                                         f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
                    with open(out) as f:
                        raw = json.load(f)
                    for k, v in raw['metrics'].items():
                        if 'memory' in k:
                            results[(name, ci)]['metrics'][k] = v
                    results['memory method'] = raw['settings']['peak memory method']
            loads.append(os.getloadavg()[0])
    return render_compare(args, device, what, results, loads)


def render_compare(args, device, what, results, loads) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    env = environment(device)
    env['load average (1 min) during the run'] = (f'{min(loads):.2f} .. {max(loads):.2f} '
                                                  '(sampled at start, between benchmarks and at the end)')
    model_settings = results[(what[0], 'model')]
    lines = [f'## compare: plain fp32 vs optimised fp32 vs bf16, batch {args.batch_size} ({stamp})', '']
    for k, v in env.items():
        lines.append(f'- **{k}:** {v}')
    for k in ('config', 'model'):
        lines.append(f'- **{k}:** {model_settings[k]}')
    lines.append(f'- **timing:** one process, one model per benchmark; the switches are flipped '
                 f'between runs and the configurations interleaved (ABC, CBA, ...); {args.warmup} '
                 f'warm-up per configuration, median of {args.runs} step runs'
                 + (f' and {args.full_runs} full sampling run(s)' if 'sample' in what else ''))
    for name in what:
        for k, v in results[(name, 'settings')].items():
            lines.append(f'- **{name} {k}:** {v}')
    for ci, (label, preset, dtype) in enumerate(COMPARE_CONFIGS):
        sw = results[(what[-1], ci)]['switches']
        lines.append(f'- **{label}:** ' + ', '.join(f'{k}={v}' for k, v in sw.items())
                     + (', whole step under bf16 autocast' if dtype == 'bf16' else ''))
    if not args.no_memory:
        lines.append(f'- **peak memory:** {results.get("memory method", memory_method(device))} '
                     '(one subprocess per configuration running one training step / one sampling step)')
    labels = [c[0] for c in COMPARE_CONFIGS]
    ratio_heads = [f'{labels[0]} / {lab}' for lab in labels[1:]]
    medians: Dict[Tuple[str, str, int], float] = {}
    for name in what:
        lines += ['', f'### {name}', '',
                  '| operation | ' + ' | '.join(f'{lab} (ms)' for lab in labels) + ' | '
                  + ' | '.join(ratio_heads) + ' |',
                  '| --- |' + ' ---: |' * (len(labels) + len(ratio_heads))]
        for row_i, (row, _) in enumerate(results[(name, 0)]['rows']):
            meds = [statistics.median(results[(name, ci)]['rows'][row_i][1])
                    for ci in range(len(labels))]
            shown = results[(name, 0)]['full_name'] if row == 'FULL' else row
            ratios = [f'{meds[0] / m:.2f}x' if m > 0 else '—' for m in meds[1:]]
            lines.append(f'| {shown} | ' + ' | '.join(f'{m * 1e3:.1f}' for m in meds) + ' | '
                         + ' | '.join(ratios) + ' |')
            for ci, m in enumerate(meds):
                medians[(name, row, ci)] = m
        for mname in results[(name, 0)]['metrics']:
            vals = [results[(name, ci)]['metrics'].get(mname) for ci in range(len(labels))]
            if any(v is None for v in vals):
                continue
            if 'memory' in mname:
                ratios = [f'{v / vals[0]:.2f} of plain' if vals[0] > 0 else '—' for v in vals[1:]]
            else:
                ratios = [f'{v / vals[0]:.2f}x' for v in vals[1:]]
            lines.append(f'| {mname} | ' + ' | '.join(f'{v:.2f}' for v in vals) + ' | '
                         + ' | '.join(ratios) + ' |')
            for ci, v in enumerate(vals):
                medians[(name, mname, ci)] = v
    lines += ['', '### speed-up targets', '', '| target | measured | status |', '| --- | ---: | --- |']
    for name, row, label, ci, need in TARGETS:
        base, new = medians.get((name, row, 0)), medians.get((name, row, ci))
        if base is None or new is None or new <= 0:
            continue
        ratio = base / new
        lines.append(f'| {label} >= {need:g}x | {ratio:.2f}x | {"met" if ratio >= need else "MISSED"} |')
    mname = 'peak memory of the step (MiB)'
    base = medians.get(('train', mname, 0))
    for ci in range(1, len(labels)):
        v = medians.get(('train', mname, ci))
        if base is not None and v is not None:
            lines.append(f'| training-step peak memory, {labels[ci]} <= plain | {v:.0f} vs '
                         f'{base:.0f} MiB | {"met" if v <= base else "MISSED"} |')
    if args.note:
        lines += ['', args.note]
    return '\n'.join(lines) + '\n'
