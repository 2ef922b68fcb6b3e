"""Benchmark ``summary``: one table from the ``--json`` files of ``trainstep``,
``train`` and ``sample`` runs (what ``tools/gpu_check.sh`` prints), with the
performance targets."""
import argparse
import datetime
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Tuple

import torch


def add_summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('results', nargs='+', help='--json files of trainstep / train / sample runs')
    p.add_argument('--ref-train-ms', type=float, default=None,
                   help='the reference implementation\'s training step on this card (ms); '
                   'the target is half of it')
    p.add_argument('--ref-sample-ms', type=float, default=None,
                   help='the reference\'s sampling step at 50 %% masked under bf16 autocast (ms)')
    p.add_argument('--ref-peak-gib', type=float, default=None,
                   help='the reference\'s training-step peak memory above the weights (GiB)')
    p.add_argument('--min-images-per-s', type=float, default=None,
                   help='target of the full sampling run (images/s)')


def _row_median(raw: dict, prefix: str) -> Optional[float]:
    for name, times in raw['rows']:
        if name.startswith(prefix) and times:
            return statistics.median(times)
    return None


def run_summary(args: argparse.Namespace, device: torch.device) -> str:
    """One markdown table from the JSON files of several runs, with the targets."""
    runs = []
    for path in args.results:
        if not osp.isfile(path):
            raise SystemExit(f'error: result file not found: {path!r}')
        with open(path) as f:
            runs.append(json.load(f))
    machine = next((r.get('env', {}) for r in runs if r.get('env')), {})
    lines = ['## ADDP on this device: plain vs fast vs the tools/train.py / tools/sample.py path '
             f'({datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})', '']
    for k, v in machine.items():
        lines.append(f'- **{k}:** {v}')
    lines += ['', '| model | run | batch | train ms/step | train images/s | train peak GiB | MFU % '
              '| sample step ms (50 % masked) | full sampling images/s | sample peak GiB |',
              '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    table: Dict[Tuple[str, str], dict] = {}
    order: List[Tuple[str, str]] = []
    for raw in runs:
        model = osp.basename(raw['settings'].get('config', '?'))
        model = 'ViT-L' if 'large' in model else 'ViT-B' if 'base' in model else model
        key = (model, raw.get('label') or raw['settings'].get('preset / dtype', raw['kind']))
        if key not in table:
            table[key] = {}
            order.append(key)
        entry = table[key]
        entry['batch'] = raw.get('batch')
        m = raw['metrics']
        if raw['kind'] in ('trainstep', 'train'):
            ms = _row_median(raw, 'training step') or _row_median(raw, '**training step')
            entry['train_ms'] = ms * 1e3 if ms else None
            entry['train_ips'] = raw['batch'] / ms if ms else None
            entry['train_gib'] = m.get('peak memory of the step (MiB)', 0) / 1024
            entry['mfu'] = m.get('MFU (%)')
        elif raw['kind'] == 'sample':
            ms = _row_median(raw, '**one sampling step')
            entry['sample_ms'] = ms * 1e3 if ms else None
            entry['sample_ips'] = m.get('images/s')
            entry['sample_gib'] = m.get('peak memory of sampling (MiB)', 0) / 1024

    def fmt(v, spec):
        return '—' if v is None else format(v, spec)

    for key in order:
        e = table[key]
        lines.append(f'| {key[0]} | {key[1]} | {e.get("batch", "")} | {fmt(e.get("train_ms"), ".1f")} | '
                     f'{fmt(e.get("train_ips"), ".1f")} | {fmt(e.get("train_gib"), ".2f")} | '
                     f'{fmt(e.get("mfu"), ".1f")} | {fmt(e.get("sample_ms"), ".1f")} | '
                     f'{fmt(e.get("sample_ips"), ".1f")} | {fmt(e.get("sample_gib"), ".2f")} |')
    targets = []
    for key in order:
        e = table[key]
        if args.ref_train_ms and e.get('train_ms'):
            need = args.ref_train_ms / 2
            targets.append((f'{key[0]} {key[1]}: training step <= {need:.0f} ms (2x the reference)',
                            f'{e["train_ms"]:.1f} ms', e['train_ms'] <= need))
        if args.ref_peak_gib and e.get('train_gib'):
            targets.append((f'{key[0]} {key[1]}: training peak <= {args.ref_peak_gib:.1f} GiB',
                            f'{e["train_gib"]:.2f} GiB', e['train_gib'] <= args.ref_peak_gib))
        if args.ref_sample_ms and e.get('sample_ms'):
            need = args.ref_sample_ms / 2
            targets.append((f'{key[0]} {key[1]}: sampling step <= {need:.0f} ms (2x the reference)',
                            f'{e["sample_ms"]:.1f} ms', e['sample_ms'] <= need))
        if args.min_images_per_s and e.get('sample_ips'):
            targets.append((f'{key[0]} {key[1]}: full sampling >= {args.min_images_per_s:g} images/s',
                            f'{e["sample_ips"]:.1f}', e['sample_ips'] >= args.min_images_per_s))
    if targets:
        lines += ['', '| target | measured | status |', '| --- | ---: | --- |']
        lines += [f'| {t} | {v} | {"met" if ok else "MISSED"} |' for t, v, ok in targets]
    if args.note:
        lines += ['', args.note]
    return '\n'.join(lines) + '\n'
