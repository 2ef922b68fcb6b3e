"""Benchmarks ``train`` and ``sample``: an ADDP built from a config with random
weights, the switch presets, and one training step / sampling step with
per-phase times (plus the full sampling run)."""
import argparse
import math
import os
import os.path as osp
import time
from contextlib import nullcontext
from typing import Dict, List, Tuple

import torch

from .report import DEFAULT_ADDP_CONFIG, ROOT, BenchResult
from .timing import PhaseTimer, _median, memory_method, peak_memory_mb, peak_memory_start


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', default=DEFAULT_ADDP_CONFIG,
                   help='ADDP pretraining/generation config (official ViT-B by default); '
                   'built with random weights, no checkpoint is read')
    p.add_argument('--preset', choices=['plain', 'fast', 'config'], default='fast',
                   help='performance switches (addp_mm.models.utils.performance.PRESETS); '
                   "'config' keeps the config's own (what tools/train.py and tools/sample.py run)")
    p.add_argument('--label', default=None, help='name of this run in the summary table')
    p.add_argument('--dtype', choices=['fp32', 'bf16'], default='fp32',
                   help='bf16: autocast over the step and frozen_dtype=bf16')
    p.add_argument('--compile', action='store_true', help='torch.compile the frozen parts')
    p.add_argument('--steps', type=int, default=20, help='sampling steps (sample)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the raw result to this file')


def build_addp(args: argparse.Namespace, device: torch.device, with_sampler: bool = False):
    """ADDP from ``args.config`` with random weights (switches: :func:`apply_config`)."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS

    # quiet logger (init_weights logs every parameter at INFO)
    MMLogger.get_instance(f'addp_benchmark_{os.getpid()}', log_level='WARNING')
    cfg = Config.fromfile(args.config)
    if 'model' not in cfg or cfg.model.get('type') != 'ADDP':
        raise SystemExit(f'error: {args.config} has no ADDP model (model.type must be "ADDP")')
    mcfg = cfg.model.to_dict()
    mcfg['require_frozen_checkpoints'] = False
    mcfg['tokenizer']['checkpoint'] = None  # random weights: timings do not depend on values
    mcfg['token_predictor']['checkpoint'] = None
    if with_sampler:
        sampler = dict(mcfg.get('sampler') or dict(type='AlternatingDenoisingSampler'))
        sampler['num_steps'] = args.steps
        mcfg['sampler'] = sampler
    else:
        mcfg['sampler'] = None
    torch.manual_seed(args.seed)
    model = MODELS.build(mcfg)
    model.init_weights()
    model.to(device)
    return model, cfg


def apply_config(model, preset: str, dtype: str, compile_: bool = False) -> Dict[str, object]:
    """Set the switches of ``preset`` (+ ``frozen_dtype='bf16'`` for bf16) on
    ``model``; ``preset='config'`` keeps the model's own switches."""
    from addp_mm.models.utils.performance import (PRESETS, configure_performance,
                                                  describe_performance)
    switches = {} if preset == 'config' else dict(PRESETS[preset])
    if dtype == 'bf16':
        switches['frozen_dtype'] = 'bf16'
    if compile_:
        switches['compile'] = True
    applied = configure_performance(model, **switches)
    if preset == 'config':
        applied = {k: (str(v).replace('torch.', '') if isinstance(v, torch.dtype) else v)
                   for k, v in describe_performance(model).items()}
    return applied


def _autocast(dtype: str, device: torch.device):
    if dtype == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class TrainBench:
    """One ADDP training step (forward_train_step, backward, AdamW) with timed phases."""

    REST = 'other (masks, soft embedding, loss)'
    TOTAL = '**training step (total)**'

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.model, self.cfg = build_addp(args, device)
        self.model.train()
        model = self.model
        B, N = args.batch_size, model.num_tokens
        if not 0 < args.mask_ratio <= args.mask_ratio_next <= 1:
            raise SystemExit('error: need 0 < --mask-ratio <= --mask-ratio-next <= 1')
        g = torch.Generator().manual_seed(args.seed)
        H, W = model.backbone.img_size
        self.images = torch.rand(B, 3, H, W, generator=g).to(device)
        noise = torch.rand(B, N, generator=g)
        ms = model.mask_generator
        self.mask_t = ms.masks_from_noise(noise, max(1, round(args.mask_ratio * N))).to(device)
        self.mask_next = ms.masks_from_noise(noise, max(1, round(args.mask_ratio_next * N))).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        self.timer = timer = PhaseTimer(device)
        timer.wrap(model.tokenizer, 'encode', 'tokenizer encode (x0 -> z0)')
        timer.wrap(model.token_predictor, 'forward_logits', 'token predictor (both passes)')
        timer.wrap(model.tokenizer, 'decode', 'tokenizer decode (x_t)')
        timer.wrap(model.backbone, 'forward', 'encoder forward')
        timer.wrap(model.neck, 'forward', 'decoder forward')
        self.losses: List[float] = []

    def settings(self) -> Dict[str, str]:
        N = self.model.num_tokens
        return {'masks': f'{int(self.mask_t[0].sum())}/{N} tokens masked by m_t, '
                         f'{int(self.mask_next[0].sum())}/{N} by m_t+1; model.train() (dropout on)'}

    def step(self, dtype: str) -> Dict[str, float]:
        """One timed step; returns the phase times and the total (seconds)."""
        timer, model = self.timer, self.model
        timer.reset()
        timer._sync()
        t0 = time.perf_counter()
        with _autocast(dtype, self.device):
            out = model.forward_train_step(self.images, self.mask_t, self.mask_next)
        timer.run('backward', lambda: out['loss'].backward())
        timer.run('optimizer step (AdamW)',
                  lambda: (self.optim.step(), self.optim.zero_grad(set_to_none=True)))
        timer._sync()
        total = time.perf_counter() - t0
        self.losses.append(float(out['loss'].detach()))
        phases = dict(timer.totals)
        phases[self.REST] = total - sum(phases.values())
        phases[self.TOTAL] = total
        return phases

    def row_order(self) -> List[str]:
        return self.timer.order + [self.REST, self.TOTAL]


class SampleBench:
    """One sampling step at 50 % masked tokens and a full sampling run."""

    REST = 'other (token sampling, re-masking, soft embedding)'
    TOTAL = '**one sampling step (total)**'

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        from addp_mm.models.generation.schedule import make_generators
        self.make_generators = make_generators
        self.args, self.device = args, device
        self.model, self.cfg = build_addp(args, device, with_sampler=True)
        self.model.eval()
        model = self.model
        B, N, K = args.batch_size, model.num_tokens, model.num_codes
        g = torch.Generator().manual_seed(args.seed)
        self.tokens = torch.randint(0, K, (B, N), generator=g).to(device)
        noise = torch.rand(B, N, generator=g)
        self.mask = model.mask_generator.masks_from_noise(noise, N // 2).bool().to(device)
        self.seeds = [args.seed + i for i in range(B)]
        self.num_unknown = torch.full((B, ), N, dtype=torch.long, device=device)
        self.full_name = f'**{args.steps}-step sampling of {B} images**'
        self.timer = timer = PhaseTimer(device)
        timer.wrap(model.backbone, 'forward', 'encoder forward')
        timer.wrap(model.neck, 'forward', 'decoder forward')
        timer.wrap(model.tokenizer, 'decode', 'VQ decode (next pixels)')
        with torch.no_grad():
            self.x = model.tokens_to_pixels(self.tokens, None, torch.zeros_like(self.mask)).float()

    def settings(self) -> Dict[str, str]:
        N, T = self.model.num_tokens, self.args.steps
        return {'one step': f'step {T // 2} of {T}, {N // 2}/{N} tokens masked, eval mode, no_grad',
                'full run': f'sampler.sample() from all-masked tokens, {T} steps'}

    def step(self, dtype: str) -> Dict[str, float]:
        timer, model, sampler = self.timer, self.model, self.model.sampler
        timer.reset()
        timer._sync()
        t0 = time.perf_counter()
        # the sampler's own precision switch applies as in sampler.sample()
        with torch.no_grad(), _autocast(dtype, self.device), \
                sampler.autocast_context(self.device.type):
            out = sampler.denoise_step(model, self.x, self.tokens, self.mask, self.args.steps // 2,
                                       self.num_unknown, self.make_generators(self.seeds, self.device))
            probs = out['logits'].softmax(dim=-1)
            model.tokens_to_pixels(out['tokens'], probs, out['mask'].float())
        timer._sync()
        total = time.perf_counter() - t0
        phases = dict(timer.totals)
        phases[self.REST] = total - sum(phases.values())
        phases[self.TOTAL] = total
        return phases

    def full(self, dtype: str) -> float:
        timer = self.timer
        timer._sync()
        t0 = time.perf_counter()
        with torch.no_grad(), _autocast(dtype, self.device):
            self.model.sampler.sample(self.model, seeds=self.seeds)
        timer._sync()
        return time.perf_counter() - t0

    def row_order(self) -> List[str]:
        return self.timer.order + [self.REST, self.TOTAL]


def _collect(per_run: List[Dict[str, float]], order: List[str]) -> List[Tuple[str, List[float]]]:
    return [(name, [r.get(name, 0.) for r in per_run]) for name in order]


def _bench_result(title: str, args, bench, applied, extra_settings) -> BenchResult:
    model = bench.model
    b, n = model.backbone, model.neck
    tok, tp = model.tokenizer, model.token_predictor
    settings = {
        'config': osp.relpath(args.config, ROOT) if args.config.startswith(ROOT) else args.config,
        'model': f'encoder {b.num_layers}x{b.embed_dims}, decoder {len(n.decoder_blocks)}x'
                 f'{n.embed_dims}, VQGAN ch {tok.ch} x {tuple(tok.ch_mult)}, predictor '
                 f'{len(tp.blocks)}+{len(tp.decoder_blocks)} blocks, {b.img_size[0]}x{b.img_size[1]} '
                 f'px, {model.num_tokens} tokens; random weights',
        'preset / dtype': f'{args.preset} / {args.dtype}' + (' + compile' if args.compile else ''),
        'switches': ', '.join(f'{k}={v}' for k, v in applied.items()),
        'timing': f'{args.warmup} warm-up, median of {args.runs} timed runs',
        'peak memory method': memory_method(bench.device),
    }
    settings.update(extra_settings)
    return BenchResult(title=title, settings=settings)


def _timed(fn, dtype: str, warmup: int, runs: int) -> list:
    """``warmup`` untimed calls of ``fn(dtype)``, then the results of ``runs`` calls."""
    for _ in range(warmup):
        fn(dtype)
    return [fn(dtype) for _ in range(runs)]


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument('--mask-ratio', type=float, default=0.55,
                   help='fraction of tokens masked by m_t (the schedule mean)')
    p.add_argument('--mask-ratio-next', type=float, default=0.6,
                   help='fraction masked by m_{t+1} (>= --mask-ratio)')


def run_train(args: argparse.Namespace, device: torch.device) -> BenchResult:
    bench = TrainBench(args, device)
    applied = apply_config(bench.model, args.preset, args.dtype, args.compile)
    mem0 = peak_memory_start(device)
    per_run = _timed(bench.step, args.dtype, args.warmup, args.runs)
    peak = peak_memory_mb(device, mem0)
    res = _bench_result(f'ADDP training step, batch {args.batch_size}', args, bench, applied,
                        bench.settings())
    res.rows = _collect(per_run, bench.row_order())
    res.metrics['peak memory of the step (MiB)'] = peak
    if not all(math.isfinite(v) for v in bench.losses):
        res.notes.append(f'WARNING: non-finite loss {bench.losses}')
        res.ok = False
    if args.note:
        res.notes.append(args.note)
    return res


def add_sample_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)


def run_sample(args: argparse.Namespace, device: torch.device) -> BenchResult:
    bench = SampleBench(args, device)
    applied = apply_config(bench.model, args.preset, args.dtype, args.compile)
    mem0 = peak_memory_start(device)
    per_run = _timed(bench.step, args.dtype, args.warmup, args.runs)
    full = _timed(bench.full, args.dtype, args.full_warmup, args.full_runs)
    peak = peak_memory_mb(device, mem0)
    res = _bench_result(f'ADDP sampling, batch {args.batch_size}, {args.steps} steps', args, bench,
                        applied, bench.settings())
    res.rows = _collect(per_run, bench.row_order())
    if full:
        res.rows.append((bench.full_name, full))
        res.metrics['images/s'] = args.batch_size / _median(full)
    res.metrics['peak memory of sampling (MiB)'] = peak
    if args.note:
        res.notes.append(args.note)
    return res
