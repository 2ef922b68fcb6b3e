"""Train any addp_mm config: mmpretrain (pretraining, classification), mmdet
(detection) or mmseg (segmentation). The codebase is chosen by the config's
``default_scope``.

Examples::

    python tools/train.py configs/addp/addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py
    python tools/train.py CFG --work-dir work_dirs/x --resume            # auto-resume
    python tools/train.py CFG --cfg-options train_cfg.max_iters=10
    bash tools/dist_train.sh CFG 8                                        # torchrun, 8 processes
"""
import argparse
import os
import os.path as osp
import sys

import _common  # noqa: F401  (sys.path + safe checkpoint loading; must come first)
from _common import (ToolError, check_cfg_options, check_inputs_exist, check_scope,
                     check_work_dir, load_config, missing_hint, one_line_errors,
                     is_remote, local_checkpoint, read_checkpoint, read_runner_checkpoint,
                     setup_cpu_distributed)
from mmengine.config import DictAction
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train an addp_mm model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from PATH (or a URL, downloaded first), or from the latest '
                        'checkpoint in the work dir when given without a value (or as "auto")')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: ADDPAmpOptimWrapper (bf16 where the hardware has '
                        'it, see addp_mm/engine/amp.py) for mmpretrain configs, mmengine '
                        'AmpOptimWrapper for detection/segmentation')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch (needs auto_scale_lr in cfg)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def check_option_pairs(args) -> None:
    """Refuse ``--cfg-options`` entries that another argument would override."""
    options = args.cfg_options or {}
    if args.resume is not None and options.get('load_from'):
        raise ToolError('--resume restores the weights with the optimizer and schedule from its '
                        'checkpoint, so load_from would be ignored: drop one of them')
    if 'work_dir' in options and args.work_dir is not None:
        raise ToolError('the work dir is given twice (--work-dir and --cfg-options work_dir=): '
                        'keep --work-dir')


def merge_args(cfg, args):
    check_option_pairs(args)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    from addp_mm.engine.amp import amp_optim_wrapper_cfg
    from addp_mm.engine.resume import enable_exact_resume
    try:
        cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, cfg.get('default_scope'),
                                                  amp=args.amp)
    except ValueError as err:
        raise ToolError(str(err))
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ToolError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` '
                            'in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        args.resume = local_checkpoint(args.resume)  # a URL: downloaded and checked now
        if not osp.isfile(args.resume):
            raise ToolError(f'--resume checkpoint not found: {args.resume!r}')
        cfg.resume = True
        cfg.load_from = args.resume
    enable_exact_resume(cfg)
    if cfg.get('resume'):
        choose_resume_checkpoint(cfg)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    return cfg


def choose_resume_checkpoint(cfg) -> None:
    """``--resume auto``: the last checkpoint, or if it cannot be read the newest
    readable one of the work dir (one warning line). A config without a seed
    takes the checkpoint's, so the data order and the worker seeds repeat."""
    from addp_mm.engine.resume import pick_resume_checkpoint, resume_seed
    path, warning = cfg.get('load_from'), None
    out_dir = ((cfg.get('default_hooks') or {}).get('checkpoint') or {}).get('out_dir')
    with one_line_errors():
        if path is None:
            folders = [osp.join(out_dir, osp.basename(osp.abspath(cfg.work_dir)))] if out_dir \
                else []
            path, warning = pick_resume_checkpoint(cfg.work_dir, folders)
        if path is not None and osp.isfile(path) and \
                (cfg.get('randomness') or {}).get('seed') is None:
            seed = resume_seed(path)
            if seed is not None:
                cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    cfg.load_from = path


def check_start_files(cfg) -> None:
    """Read the file training starts from now, so a bad one fails in one line.

    ``--resume`` (explicit, or the latest checkpoint of the work dir) must be
    a Runner checkpoint; ``load_from`` must be readable. Both are only
    memory-mapped here; the Runner reads them through the same safe loader
    and refuses, before the first iteration, one whose keys or shapes do not
    fit the model (``addp_mm.engine.strict_loading``).
    """
    if cfg.get('resume'):
        path = cfg.get('load_from')
        if path is None:
            from mmengine.runner.checkpoint import find_latest_checkpoint
            path = find_latest_checkpoint(cfg.work_dir)
        if path is not None:
            read_runner_checkpoint(path, '--resume checkpoint')
    elif cfg.get('load_from'):
        path = cfg.load_from
        if not is_remote(path) and not osp.isfile(path):
            raise ToolError(f'load_from checkpoint not found: {path!r}')
        with one_line_errors():  # a URL is downloaded now (the Runner reads the cached file)
            read_checkpoint(path, mmap=True)


def check_trainable(cfg, config_path: str) -> None:
    """ADDP trains against pretrained frozen parts; a config without them cannot train.

    Generation configs set ``require_frozen_checkpoints=False`` and no frozen
    checkpoints because their weights come from the evaluated file.
    """
    model = cfg.get('model') or {}
    if str(model.get('type', '')).split('.')[-1] != 'ADDP':
        return
    for part in ('tokenizer', 'token_predictor'):
        sub = model.get(part)
        if isinstance(sub, dict) and not sub.get('checkpoint'):
            raise ToolError(f'model.{part}.checkpoint is not set, and ADDP pretraining needs its '
                            f'pretrained frozen {part}. '
                            + missing_hint(config_path, f'model.{part}.checkpoint'))


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    check_scope(cfg)
    cfg = merge_args(cfg, args)
    check_trainable(cfg, args.config)
    check_work_dir(cfg.work_dir)
    check_start_files(cfg)
    loaders = ('train_dataloader', ) if args.no_validate else ('train_dataloader',
                                                               'val_dataloader')
    check_inputs_exist(cfg, args.config, loaders)
    setup_cpu_distributed(cfg, args.launcher)
    try:
        with one_line_errors():
            runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else \
                _build_custom_runner(cfg)
            runner.train()
    except FileNotFoundError as err:  # a file the pre-flight check could not see
        raise ToolError(f'{err}. {missing_hint(args.config)}') from None
    close_process_group()


def close_process_group() -> None:
    """End a multi-process run cleanly: every rank finishes, then the process
    group is destroyed, so no communication thread is still alive when Python
    exits (a live gloo thread at exit aborts the process)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _build_custom_runner(cfg):
    from mmengine.registry import RUNNERS
    return RUNNERS.build(cfg)


if __name__ == '__main__':
    main()
