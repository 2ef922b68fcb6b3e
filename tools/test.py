"""Evaluate a checkpoint on any addp_mm config (mmpretrain, mmdet or mmseg,
chosen by ``default_scope``), including generation configs whose evaluator
samples images and computes FID/IS.

Examples::

    python tools/test.py CFG work_dirs/x/iter_100.pth
    python tools/test.py CFG CKPT --out results.pkl --show-dir vis/
"""
import argparse
import json
import os
import os.path as osp

import _common  # noqa: F401  (environment + sys.path set-up; must come first)
from _common import ToolError, check_cfg_options, check_scope, load_config, setup_cpu_distributed
from mmengine.config import DictAction
from mmengine.runner import Runner


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) an addp_mm model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the evaluation logs go')
    parser.add_argument('--out', help='dump the raw predictions: a .pkl file (mmpretrain, '
                        'mmdet) or, for mmseg, a folder of prediction PNGs')
    parser.add_argument('--show-dir', help='write visualised predictions to this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def add_outputs(cfg, scope: str, args) -> None:
    """Configure ``--show-dir`` the way each codebase does it."""
    if not args.show_dir:
        return
    vis = cfg.default_hooks.get('visualization')
    if vis is None:
        raise ToolError('--show-dir needs a `visualization` entry in default_hooks')
    if scope == 'mmpretrain':
        vis.update(enable=True, interval=1, out_dir=osp.abspath(args.show_dir))
    elif scope == 'mmdet':
        vis.update(draw=True, test_out_dir=osp.abspath(args.show_dir))
    else:  # mmseg draws into the visualizer's save_dir
        vis.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = osp.abspath(args.show_dir)


def add_dump(runner: Runner, cfg, scope: str, args) -> None:
    """Attach the result dumper of each codebase for ``--out``."""
    if not args.out:
        return
    if scope == 'mmseg':
        return  # handled through the evaluator config before building the runner
    if not args.out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out must be a .pkl file for {scope} configs, got {args.out!r}')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    scope = check_scope(cfg)
    if not osp.isfile(args.checkpoint):
        raise ToolError(f'checkpoint not found: {args.checkpoint!r}')
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if cfg.get('test_dataloader') is None or cfg.get('test_evaluator') is None:
        raise ToolError('the config has no test_dataloader/test_evaluator to evaluate with')
    add_outputs(cfg, scope, args)
    if args.out and scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    add_dump(runner, cfg, scope, args)
    metrics = runner.test()
    if runner.rank == 0:
        printable = {k: (float(v) if hasattr(v, '__float__') else v) for k, v in metrics.items()}
        print('metrics: ' + json.dumps(printable, default=str))


if __name__ == '__main__':
    main()
