"""Stages 1-5: tokenizer, token predictor, ADDP, samples and the linear probe."""
import argparse
import glob
import os.path as osp
import sys
from typing import Callable, List

from .evaluation import evaluate_tokenizer, stack_strips, tensors_digest, transfer_summary, upscale
from .processes import run_concurrently, run_tool
from .stages import CFG_DIR, ROOT, STAGES, DemoError


def run_upstream(args: argparse.Namespace, summary: dict, train: Callable, wd: str,
                 photos: str) -> str:
    """Stages 1-5 (tokenizer, predictor, ADDP, samples, linear probe); returns
    the ADDP checkpoint."""
    S = summary['stages']
    photo_opts = [f'train_dataloader.dataset.data_root={photos}']
    # 1. tokenizer
    vq_ckpt = train('tokenizer', photo_opts)
    S['tokenizer']['eval'] = evaluate_tokenizer(
        vq_ckpt, osp.join(CFG_DIR, STAGES['tokenizer'].config), photos,
        osp.join(wd, 'tokenizer_reconstructions.png'))
    # 2. token predictor
    tp_ckpt = train('predictor', photo_opts + [f'model.tokenizer.checkpoint={vq_ckpt}'])
    # 3. ADDP
    addp_ckpt = train('addp', photo_opts + [f'model.tokenizer.checkpoint={vq_ckpt}',
                                            f'model.token_predictor.checkpoint={tp_ckpt}'])
    # 4. sampling
    run_sampling(args, summary, wd, addp_ckpt, vq_ckpt)
    # 5. transfer
    run_probes(args, summary, train, addp_ckpt, photo_opts + [
        f'val_dataloader.dataset.data_root={photos}'])
    return addp_ckpt


def run_sampling(args: argparse.Namespace, summary: dict, wd: str, addp_ckpt: str,
                 vq_ckpt: str) -> None:
    """Stage 4: unconditional samples of the ADDP model through
    ``tools/sample.py``, a grid and the denoising strips."""
    S = summary['stages']
    num_samples = args.num_samples or (4 if args.fast else 16)
    sdir = osp.join(wd, 'samples')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'sample.py'), S['addp']['config'], addp_ckpt,
           '--num', str(num_samples), '--batch-size', str(num_samples), '--out-dir', sdir,
           '--save-steps', '--device', 'cpu', '--seed', '0']
    wall = run_tool(cmd, osp.join(sdir, 'stdout.log'), '4. samples', None)
    grid = osp.join(sdir, 'grid.png')
    strips = sorted(glob.glob(osp.join(sdir, 'steps', '*.png')))[:4]
    if not osp.isfile(grid) or not strips:
        raise DemoError(f'tools/sample.py wrote no grid/strips to {sdir}')
    upscale(grid, osp.join(wd, 'samples_grid.png'), 4)
    stack_strips(strips, osp.join(wd, 'denoising_strips.png'))
    from mmengine.config import Config
    steps = Config.fromfile(S['addp']['config'], import_custom_modules=False).model.sampler.num_steps
    addp_tok, vq_tok = tensors_digest(addp_ckpt, 'tokenizer.'), tensors_digest(vq_ckpt, 'tokenizer.')
    S['samples'] = dict(config=S['addp']['config'], iters='-', wall_s=wall)
    summary['generation'] = dict(
        grid=grid, strips=strips, num_samples=num_samples, num_steps=steps,
        addp_tokenizer_sha1=addp_tok, trained_tokenizer_sha1=vq_tok,
        decoded_by_trained_tokenizer=addp_tok == vq_tok)


def run_probes(args: argparse.Namespace, summary: dict, train: Callable, addp_ckpt: str,
               probe_opts: List[str]) -> None:
    """Stage 5: the same linear probe on the ADDP and the random-init encoder,
    one run per seed (probe init + data order)."""
    S = summary['stages']
    seeds = list(range(args.probe_seeds or (1 if args.fast else 3)))
    plan = [(seed, who, name, name if seed == 0 else f'{name}_seed{seed}', extra)
            for seed in seeds
            for who, name, extra in (('addp', 'transfer_addp',
                                      [f'model.backbone.init_cfg.checkpoint={addp_ckpt}']),
                                     ('random', 'transfer_random', []))]
    for *_, key, _ in plan:  # the report lists the runs in this order
        S[key] = {}
    run_concurrently([(name, probe_opts + extra + [f'randomness.seed={seed}'], key, ())
                      for seed, _, name, key, extra in plan], args.jobs, train)
    runs = {'addp': [], 'random': []}
    for seed, who, _, key, _ in plan:
        m = S[key]['metrics']
        if 'accuracy/top1' not in m:
            raise DemoError(f'the linear-probe run {key} logged no accuracy/top1')
        runs[who].append(dict(seed=seed, top1=m['accuracy/top1'],
                              top5=m.get('accuracy/top5', float('nan'))))
    summary['transfer'] = transfer_summary(runs)
