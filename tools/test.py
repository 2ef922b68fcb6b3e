"""Evaluate a checkpoint on any addp_mm config (mmpretrain, mmdet or mmseg,
chosen by ``default_scope``), including generation configs whose evaluator
samples images and computes FID/IS.

Examples::

    python tools/test.py CFG work_dirs/x/iter_100.pth
    python tools/test.py CFG CKPT --out results.pkl --show-dir vis/

Before anything runs, the outputs (``--work-dir``, ``--out``, ``--show-dir``)
are checked to be writable and the checkpoint is read safely
(``weights_only=True``) and compared with the config's model: the tool exits
with one line if a model key is missing from the file, the file has keys the
model does not know, shapes differ, or most parameters would stay at their
random initialisation. The only keys allowed to differ are those under
:data:`KEYS_ALLOWED_TO_DIFFER`. Metrics are printed first; ``--out`` and the
``--show-dir`` pictures are then moved into place (temporary name + rename).
They are drawn into ``<folder>.partial``, which starts empty and is removed if
the run fails, so a failed run adds no file to a later one.
"""
import argparse
import json
import os
import os.path as osp

import _common  # noqa: F401  (sys.path + safe checkpoint loading; must come first)
from _common import (ToolError, check_cfg_options, check_scope, check_work_dir, load_config,
                     local_checkpoint, missing_hint, one_line_errors, safe_torch_load,
                     setup_cpu_distributed)
from mmengine.config import DictAction
from mmengine.runner import Runner

from addp_mm.utils.outputs import (OutputError, atomic_write, check_output_dir, check_output_file,
                                   partial_dir, publish_dir, staged_dirs)

#: Key prefixes that may be missing from, or extra in, the checkpoint: the data
#: preprocessor's normalisation buffers are set by the config, not learnt.
from addp_mm.engine.strict_loading import KEYS_ALLOWED_TO_DIFFER  # noqa: E402,F401


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) an addp_mm model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (.pth or .safetensors) or URL')
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


def check_option_pairs(args) -> None:
    """Refuse ``--cfg-options`` entries that another argument would override."""
    options = args.cfg_options or {}
    if 'load_from' in options:
        raise ToolError('tools/test.py evaluates its CHECKPOINT argument: drop load_from from '
                        '--cfg-options and give the file as CHECKPOINT')
    if 'work_dir' in options and args.work_dir is not None:
        raise ToolError('the work dir is given twice (--work-dir and --cfg-options work_dir=): '
                        'keep --work-dir')


def check_outputs(scope: str, args, work_dir: str) -> None:
    """Fail in one line, before any work, if an output cannot be written."""
    check_work_dir(work_dir)
    try:
        if args.out:
            if scope == 'mmseg':
                if args.out.endswith(('.pkl', '.pickle')):
                    raise ToolError(f'--out is a folder of prediction PNGs for mmseg configs, '
                                    f'got the file name {args.out!r}: give a folder')
                check_output_dir(args.out, '--out')
            else:
                if not args.out.endswith(('.pkl', '.pickle')):
                    raise ToolError(f'--out must be a .pkl file for {scope} configs, '
                                    f'got {args.out!r}')
                check_output_file(args.out, '--out')
        if args.show_dir:
            check_output_dir(args.show_dir, '--show-dir')
    except OutputError as err:
        raise ToolError(str(err)) from None


def add_outputs(cfg, scope: str, args) -> None:
    """Configure ``--show-dir`` the way each codebase does it (into a staging folder)."""
    if not args.show_dir:
        return
    vis = cfg.default_hooks.get('visualization')
    if vis is None:
        raise ToolError('--show-dir needs a `visualization` entry in default_hooks')
    staging = partial_dir(args.show_dir)
    if scope == 'mmpretrain':
        vis.update(enable=True, interval=1, out_dir=staging)
    elif scope == 'mmdet':
        vis.update(draw=True, test_out_dir=staging)
    else:  # mmseg draws into the visualizer's save_dir
        vis.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = staging


def _collecting(metric_cls):
    """A dump metric that keeps its results instead of writing them."""

    class Collect(metric_cls):

        def compute_metrics(self, results: list) -> dict:
            self.collected = results
            return {}

    return Collect


def add_dump(runner: Runner, scope: str, args):
    """Attach the result collector of each codebase for ``--out``."""
    if not args.out or scope == 'mmseg':
        return None  # mmseg: handled through the evaluator config before building the runner
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    dump = _collecting(Dump)(out_file_path=args.out)
    runner.test_evaluator.metrics.append(dump)
    return dump


def check_checkpoint_fits(model, ckpt, path: str) -> None:
    """Exit with one line if the checkpoint's weights do not fit ``model``.

    The key accounting is :func:`addp_mm.engine.strict_loading.check_checkpoint_fits`,
    the same check ``load_from`` and ``--resume`` get.
    """
    from addp_mm.engine.strict_loading import check_checkpoint_fits as check
    from addp_mm.utils.checkpoint import CheckpointError
    try:
        check(model, ckpt, repr(path), hint='Evaluate it with the config it was trained with '
              '(or convert it first).')
    except CheckpointError as err:
        raise ToolError(str(err)) from None


def save_outputs(scope: str, args, dump) -> None:
    """Move the staged outputs into place (after the metrics are printed)."""
    import pickle
    if dump is not None and getattr(dump, 'collected', None) is not None:
        with atomic_write(args.out) as f:
            pickle.dump(dump.collected, f)
        print(f'results saved to {args.out}')
    if args.out and scope == 'mmseg' and publish_dir(partial_dir(args.out), args.out):
        print(f'predictions saved to {args.out}')
    if args.show_dir and publish_dir(partial_dir(args.show_dir), args.show_dir):
        print(f'visualisations saved to {args.show_dir}')


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    scope = check_scope(cfg)
    args.checkpoint = local_checkpoint(args.checkpoint)  # a URL: downloaded and checked now
    if not osp.isfile(args.checkpoint):
        raise ToolError(f'checkpoint not found: {args.checkpoint!r}')
    if args.cfg_options:
        check_option_pairs(args)
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
    check_outputs(scope, args, cfg.work_dir)
    with one_line_errors():
        ckpt = safe_torch_load(args.checkpoint, mmap=True)
    # staging folders start empty and are removed if the run fails (on rank 0,
    # which writes them)
    staged = [args.show_dir, args.out if scope == 'mmseg' else None]
    with staged_dirs(*(staged if os.environ.get('RANK', '0') == '0' else [])):
        run_test(cfg, scope, args, ckpt)


def run_test(cfg, scope: str, args, ckpt) -> None:
    """Build the runner, check the checkpoint, test, print the metrics, publish the outputs."""
    add_outputs(cfg, scope, args)
    if args.out and scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = partial_dir(args.out)
        cfg.test_evaluator['keep_results'] = True
    setup_cpu_distributed(cfg, args.launcher)
    try:
        with one_line_errors():
            runner = Runner.from_cfg(cfg)
            check_checkpoint_fits(runner.model, ckpt, args.checkpoint)
            del ckpt
            dump = add_dump(runner, scope, args)
            metrics = runner.test()
    except FileNotFoundError as err:  # test data or a frozen part's file
        raise ToolError(f'{err}. {missing_hint(args.config)}') from None
    if runner.rank == 0:
        printable = {k: (float(v) if hasattr(v, '__float__') else v) for k, v in metrics.items()}
        print('metrics: ' + json.dumps(printable, default=str), flush=True)
        try:
            save_outputs(scope, args, dump)
        except OSError as err:
            raise ToolError(f'metrics above; saving the outputs failed: {err}') from None


if __name__ == '__main__':
    main()
