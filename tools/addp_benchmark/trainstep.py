"""Benchmark ``trainstep``: ``model.train_step`` exactly as ``tools/train.py``
runs the config (its optimizer wrapper, ``--amp``, cuDNN setting), with images/s,
peak memory and the model-FLOPs utilisation."""
import argparse
import math
import os
import os.path as osp
from typing import List

import torch
from torch import Tensor

from .report import DEFAULT_ADDP_CONFIG, ROOT, BenchResult
from .timing import (_median, bf16_matmul_flops, count_step_flops, measure, memory_method,
                     peak_memory_mb, peak_memory_start)


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
