"""Benchmark ``ampcheck``: a few AMP training steps through ``model.train_step``
and the optimizer wrapper ``tools/train.py --amp`` uses; fails unless every
loss is finite."""
import argparse
import math
from typing import List

import torch

from .report import BenchResult
from .timing import measure, peak_memory_mb, peak_memory_start
from .train_sample import _bench_result, add_model_args, apply_config, build_addp


def add_ampcheck_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument('--lr', type=float, default=1e-4)


def ampcheck_wrapper_cfg(device: torch.device, lr: float) -> dict:
    """The optimizer wrapper ``tools/train.py --amp`` builds for an mmpretrain
    config with a plain ``OptimWrapper`` (AdamW, clip 3.0)."""
    from addp_mm.engine.amp import amp_optim_wrapper_cfg
    optimizer = dict(type='AdamW', lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    return amp_optim_wrapper_cfg(dict(type='OptimWrapper', optimizer=optimizer,
                                      clip_grad=dict(max_norm=3.0)), 'mmpretrain',
                                 cuda_available=device.type == 'cuda')


def run_ampcheck(args: argparse.Namespace, device: torch.device) -> BenchResult:
    """AMP training steps through ``model.train_step`` (data preprocessor,
    optimizer wrapper, backward, clip, AdamW); fails unless every loss is finite."""
    from mmengine.optim import build_optim_wrapper
    if args.dtype != 'fp32':
        raise SystemExit('error: ampcheck always trains under the AMP wrapper\'s autocast; '
                         'leave --dtype at fp32 (frozen parts follow the autocast)')
    model, cfg = build_addp(args, device)
    applied = apply_config(model, args.preset, 'fp32', args.compile)
    model.train()
    wrapper = build_optim_wrapper(model, ampcheck_wrapper_cfg(device, args.lr))
    amp_dtype = str(getattr(wrapper, 'cast_dtype', None)).replace('torch.', '').replace(
        'bfloat16', 'bf16').replace('float16', 'fp16').replace('float32', 'fp32')
    H, W = model.backbone.img_size
    g = torch.Generator().manual_seed(args.seed)
    # uint8 BGR images as a data loader would deliver them
    batch = torch.randint(0, 256, (args.batch_size, 3, H, W), generator=g, dtype=torch.uint8)
    data = dict(inputs=batch, data_samples=None)
    losses: List[float] = []

    def step():
        log_vars = model.train_step(data, wrapper)
        losses.append(float(log_vars['loss']))

    mem0 = peak_memory_start(device)
    times = measure(step, args.warmup, args.runs, device)
    peak = peak_memory_mb(device, mem0)
    res = _bench_result(f'ADDP AMP training check ({amp_dtype}), batch {args.batch_size}', args,
                        argparse.Namespace(model=model, device=device), applied, {})
    res.settings['preset / dtype'] = f'{args.preset} switches, {amp_dtype} autocast from the wrapper'
    res.settings['optimizer wrapper'] = (f'{type(wrapper).__name__} ({amp_dtype}), AdamW lr '
                                         f'{args.lr}, clip_grad 3.0, model.train_step on uint8 images')
    res.rows.append(('AMP training step (model.train_step)', times))
    res.metrics['peak memory of the step (MiB)'] = peak
    res.metrics['first loss'] = losses[0]
    res.metrics['last loss'] = losses[-1]
    finite = all(math.isfinite(v) for v in losses)
    res.ok = finite
    res.notes.append(('PASS' if finite else 'FAIL') + f': {len(losses)} {amp_dtype} AMP steps, losses '
                     + ', '.join(f'{v:.4f}' for v in losses))
    if args.note:
        res.notes.append(args.note)
    return res
