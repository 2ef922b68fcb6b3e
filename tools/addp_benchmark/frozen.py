"""Benchmark ``frozen``: the VQGAN tokenizer and the MAGE token predictor at
the official sizes (random weights)."""
import argparse
import os.path as osp

import torch

from .report import ROOT, BenchResult
from .timing import _median, measure


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
