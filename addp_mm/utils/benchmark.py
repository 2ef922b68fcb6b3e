"""Benchmarks of addp_mm (CPU or GPU), printed as markdown tables.

The library behind ``tools/benchmark.py`` (the command line) and
``tools/gpu_check.sh``. Usage::

    python tools/benchmark.py frozen    [--batch 2] [--img-size 256] [--repeat 5] [--append]
    python tools/benchmark.py train     [--config CFG] [--preset plain|fast|config] [--dtype fp32|bf16]
    python tools/benchmark.py trainstep [--config CFG] [--batch 64]
    python tools/benchmark.py sample    [--config CFG] [--preset plain|fast|config] [--dtype fp32|bf16]
    python tools/benchmark.py compare   [--config CFG] [--what train,sample] [--threads 2] [--append]
    python tools/benchmark.py summary   JSON... [--append]

Common options: ``--batch`` (``--batch-size``), ``--warmup``, ``--repeat``
(``--runs``), ``--threads``, ``--device cpu|cuda``, ``--append`` (to
``docs/benchmarks.md``, with the machine, library versions and load average),
``--note``, ``--json`` (raw result for ``summary``).

Each benchmark is a subcommand registered in :data:`BENCHMARKS`: a function
that adds its arguments to a sub-parser and a function that returns a
:class:`BenchResult` (or the finished markdown). The shared helpers time a
callable (warm-up, then the median of several runs), describe the machine and
library versions, render a markdown table and, with ``--append``, append it to
``docs/benchmarks.md``.

Benchmarks run with random weights (timings do not depend on the values), so
no checkpoint is needed.

Subcommands:
    frozen: VQGAN tokenizer encode / decode and MAGE token-predictor time at
        the official sizes (``configs/_base_/models/vqgan_f16_1024.py`` and
        ``mage_vit-base-p16.py`` by default).
    train: one ADDP training step (forward, backward, AdamW step) of the model
        in ``--config`` (official ViT-B by default, random weights), split into
        tokenizer encode, token predictor (both passes), tokenizer decode of
        x_t, encoder forward, decoder forward, backward and optimizer step,
        plus the peak memory of the step.
    trainstep: exactly what ``tools/train.py`` runs for ``--config``: the
        config's model (its own performance switches), its optimizer wrapper
        (``--amp`` as ``tools/train.py`` applies it) and cuDNN setting, and
        ``model.train_step`` on uint8 batches through the data preprocessor
        with the model's own mask draws. Reports ms/step, images/s, the peak
        memory and the model-FLOPs utilisation: the FLOPs of one step counted
        with ``torch.utils.flop_counter`` over the time of a step, against a
        large bf16 matmul measured on the same device in the same run.
    sample: one sampling step at 50 % masked tokens (encoder + decoder, VQ
        decode) and a full ``--steps`` (20) step unconditional sampling run
        (images/s), plus peak memory.
    compare: runs ``train`` and/or ``sample`` for the plain fp32 eager path,
        the optimised fp32 path and the optimised bf16 path in one process
        (interleaved), and prints them side by side with the speed-up ratios.
    ampcheck: a few AMP training steps through ``model.train_step`` and the
        optimizer wrapper ``tools/train.py --amp`` uses
        (:class:`~addp_mm.engine.amp.ADDPAmpOptimWrapper`, bf16); exits with
        status 1 unless every loss is finite.
    summary: one table from the ``--json`` files of ``trainstep``, ``train``
        and ``sample`` runs (what ``tools/gpu_check.sh`` prints), with the
        performance targets.

Switch presets (``addp_mm.models.utils.performance.PRESETS``): ``plain`` =
every performance switch off (the straightforward fp32 eager path); ``fast``
= SDPA attention, channels-last + fused SiLU in the VQGAN, both predictor
passes in one batch, no encoder / VQ decode while every token is masked;
``config`` = the switches the config itself sets (what ``tools/train.py`` and
``tools/sample.py`` run). ``--dtype bf16`` adds bf16 autocast around the whole
step and ``frozen_dtype='bf16'`` for the VQGAN and the predictor. ``--compile``
adds ``torch.compile`` of the VQGAN and the predictor.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated before the first measured step. On the CPU the peak resident set
size of the process (``VmHWM`` in ``/proc/self/status``, reset through
``/proc/self/clear_refs`` just before the first step) minus the resident size
at that point, in a process that runs only that configuration (``compare``
starts one subprocess per configuration for this); it includes gradients,
optimizer state and allocator caching. Where ``/proc`` cannot be used it falls
back to the growth of ``resource.getrusage().ru_maxrss``. (tracemalloc does not
see tensor memory.)
"""
import argparse
import datetime
import json
import math
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

#: The repository root (configs/, docs/ and tools/ live there).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The command line that wraps this module (memory runs start it as a subprocess).
TOOL = osp.join(ROOT, 'tools', 'benchmark.py')
DEFAULT_OUT = osp.join(ROOT, 'docs', 'benchmarks.md')
DEFAULT_ADDP_CONFIG = osp.join(ROOT, 'configs', 'addp',
                               'addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py')


# ----------------------------------------------------------------- helpers
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


# ------------------------------------------------------- ADDP model helpers
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


# ------------------------------------------------ configurations (switch sets)
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
        ms = model.mask_sampler
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
        self.mask = model.mask_sampler.masks_from_noise(noise, N // 2).bool().to(device)
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


# --------------------------------------------------------- benchmark: train
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


# -------------------------------------------------------- benchmark: sample
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


# ------------------------------------------------------- benchmark: compare
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


# ------------------------------------------------------ benchmark: ampcheck
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


# ----------------------------------------------------- benchmark: trainstep
def add_trainstep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', default=DEFAULT_ADDP_CONFIG,
                   help='ADDP pretraining config (official ViT-B by default); random weights')
    p.add_argument('--amp', action='store_true',
                   help="apply tools/train.py --amp to the config's optimizer wrapper (the "
                   'real-scale configs train with AMP already)')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='KEY=VALUE overrides of the config (Python literals), e.g. '
                   "model.performance='plain'")
    p.add_argument('--no-flops', action='store_true',
                   help='skip the FLOP count (one extra eager step) and the MFU')
    p.add_argument('--matmul-size', type=int, default=None,
                   help='side of the square bf16 matmul used as the peak (8192 on CUDA, 1024 on CPU)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--label', default=None, help='name of this run in the summary table')
    p.add_argument('--json', default=None, help='also write the raw result to this file')


def _parse_cfg_options(options: List[str]) -> dict:
    import ast
    out = {}
    for item in options:
        if '=' not in item:
            raise SystemExit(f'error: --cfg-options needs KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


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


def build_train_path(args: argparse.Namespace, device: torch.device):
    """Model, optimizer wrapper and config as ``tools/train.py`` builds them
    (frozen parts with random weights)."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    import addp_mm  # noqa: F401
    from addp_mm.engine.amp import amp_optim_wrapper_cfg
    from mmpretrain.registry import MODELS

    MMLogger.get_instance(f'addp_benchmark_{os.getpid()}', log_level='WARNING')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(_parse_cfg_options(args.cfg_options))
    if 'model' not in cfg or cfg.model.get('type') != 'ADDP':
        raise SystemExit(f'error: {args.config} has no ADDP model (model.type must be "ADDP")')
    cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, cfg.get('default_scope'),
                                              amp=args.amp,
                                              cuda_available=device.type == 'cuda')
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))  # as the Runner does
    cudnn_benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    torch.backends.cudnn.benchmark = cudnn_benchmark  # what mmengine's Runner sets up
    mcfg = cfg.model.to_dict()
    mcfg['require_frozen_checkpoints'] = False
    mcfg['tokenizer']['checkpoint'] = None
    mcfg['token_predictor']['checkpoint'] = None
    mcfg['sampler'] = None
    torch.manual_seed(args.seed)
    model = MODELS.build(mcfg)
    model.init_weights()
    model.to(device)
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return model, wrapper, cfg


def run_trainstep(args: argparse.Namespace, device: torch.device) -> BenchResult:
    """``model.train_step`` exactly as ``tools/train.py`` runs it (see the module doc)."""
    from addp_mm.models.utils.performance import configure_performance, describe_performance
    model, wrapper, cfg = build_train_path(args, device)
    H, W = model.backbone.img_size
    B = args.batch_size
    g = torch.Generator().manual_seed(args.seed)
    # uint8 BGR images, as the data loader delivers them (pinned on a GPU machine)
    batch = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    if device.type == 'cuda':
        batch = batch.pin_memory()
    data = dict(inputs=batch, data_samples=None)
    losses: List[Tensor] = []

    def step():
        log_vars = model.train_step(data, wrapper)
        losses.append(log_vars['loss'].detach())

    switches = describe_performance(model)
    flops = None
    if not args.no_flops:
        # counted on an eager step before anything is compiled (same FLOPs)
        saved = {k: switches[k] for k in ('compile', 'compile_trainable') if k in switches}
        configure_performance(model, compile=False, compile_trainable=False)
        flops = count_step_flops(step)
        configure_performance(model, **saved)
    mem0 = peak_memory_start(device)
    times = measure(step, args.warmup, args.runs, device)
    peak = peak_memory_mb(device, mem0)
    loss_values = [float(v) for v in losses]
    med = _median(times)
    wrapper_desc = type(wrapper).__name__
    cast = getattr(wrapper, 'cast_dtype', None)
    if cast is not None:
        wrapper_desc += f' ({str(cast).replace("torch.", "")} autocast'
        wrapper_desc += ', loss scaling)' if getattr(wrapper, 'loss_scaler', None) else ')'
    b, n = model.backbone, model.neck
    res = BenchResult(
        title=f'ADDP training step as tools/train.py runs it, batch {B}',
        settings={
            'config': osp.relpath(args.config, ROOT) if args.config.startswith(ROOT) else args.config,
            'model': f'encoder {b.num_layers}x{b.embed_dims}, decoder {len(n.decoder_blocks)}x'
                     f'{n.embed_dims}, {b.img_size[0]}x{b.img_size[1]} px, {model.num_tokens} '
                     'tokens; random weights',
            'path': 'model.train_step on uint8 batches (data preprocessor, the model\'s own mask '
                    'draws, optimizer wrapper: autocast, backward, clip, AdamW)'
                    + (' + tools/train.py --amp' if args.amp else ''),
            'optimizer wrapper': wrapper_desc,
            'cudnn.benchmark': str(torch.backends.cudnn.benchmark),
            'switches': ', '.join(f'{k}={v}' for k, v in switches.items()),
            'timing': f'{args.warmup} warm-up, median of {args.runs} timed steps, device '
                      'synchronised around each step',
            'peak memory method': memory_method(device),
        })
    res.rows.append(('training step (model.train_step)', times))
    res.metrics['images/s'] = B / med
    res.metrics['peak memory of the step (MiB)'] = peak
    if flops is not None:
        peak_flops = bf16_matmul_flops(device, args.matmul_size)
        res.metrics['model TFLOP per step (counted)'] = flops / 1e12
        res.metrics['achieved TFLOP/s'] = flops / med / 1e12
        res.metrics['bf16 matmul TFLOP/s (measured)'] = peak_flops / 1e12
        res.metrics['MFU (%)'] = 100. * flops / med / peak_flops
    res.metrics['last loss'] = loss_values[-1] if loss_values else float('nan')
    res.ok = all(math.isfinite(v) for v in loss_values)
    if not res.ok:
        res.notes.append(f'WARNING: non-finite loss {loss_values}')
    if args.note:
        res.notes.append(args.note)
    return res


# ------------------------------------------------------- benchmark: summary
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


#: name -> (add_arguments, run). Add new benchmarks here.
BENCHMARKS: Dict[str, Tuple[Callable, Callable]] = {
    'frozen': (add_frozen_args, run_frozen),
    'train': (add_train_args, run_train),
    'sample': (add_sample_args, run_sample),
    'compare': (add_compare_args, run_compare),
    'ampcheck': (add_ampcheck_args, run_ampcheck),
    'trainstep': (add_trainstep_args, run_trainstep),
    'summary': (add_summary_args, run_summary),
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('Subcommands:')[-1])
    sub = parser.add_subparsers(dest='benchmark', required=True)
    for name, (add_args, _) in BENCHMARKS.items():
        p = sub.add_parser(name)
        p.add_argument('--batch-size', '--batch', type=int, default=2)
        p.add_argument('--img-size', type=int, default=256,
                       help='frozen only (train/sample use the config\'s size)')
        p.add_argument('--warmup', type=int, default=1 if name != 'frozen' else 2)
        p.add_argument('--runs', '--repeat', type=int, default=3 if name != 'frozen' else 5)
        p.add_argument('--full-runs', type=int, default=1,
                       help='sample/compare: timed full sampling runs')
        p.add_argument('--full-warmup', type=int, default=0,
                       help='sample/compare: untimed full sampling runs first (the one-step '
                       'warm-up already warms the kernels)')
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
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'error: --device {args.device} but CUDA is not available '
                         f'(torch {torch.__version__}, built with CUDA {torch.version.cuda})')
    if args.warmup < 0 or args.runs < 1:
        raise SystemExit('error: need --warmup >= 0 and --repeat >= 1')
    result = BENCHMARKS[args.benchmark][1](args, device)
    if isinstance(result, str):
        text = result
    else:
        text = render(result, environment(device))
        if getattr(args, 'json', None):
            raw = asdict(result)
            raw.update(kind=args.benchmark, steps=getattr(args, 'steps', None),
                       batch=args.batch_size, label=getattr(args, 'label', None),
                       env=environment(device))
            with open(args.json, 'w') as f:
                json.dump(raw, f)
    print(text)
    if args.append:
        append_report(args.out, text)
        print(f'appended to {args.out}')
    return 0 if getattr(result, 'ok', True) else 1

