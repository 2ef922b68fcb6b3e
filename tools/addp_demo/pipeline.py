"""The demo from start to end: data, the stages in order, the summary."""
import argparse
import json
import os
import os.path as osp
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from .cli import parse_args
from .evaluation import dense_summary
from .processes import (default_jobs, last_checkpoint, read_scalars, run_concurrently, run_tool,
                        seconds_per_iter, set_threads, summarize_training, val_metrics)
from .report import write_report
from .stages import (DENSE_DATA, DENSE_METRICS, DENSE_ORDER, ORDER, ROOT, STAGES, DemoError,
                     stage_config)
from .upstream import run_upstream


class StageTrainer:
    """Runs a training stage through ``tools/train.py`` and records it.

    Args:
        work_dir (str): The demo's output folder; each run writes to its own
            sub-folder.
        fast (bool): Use the stages' ``--fast`` budgets.
        stages (dict): ``summary['stages']``, where each run's numbers go.
    """

    def __init__(self, work_dir: str, fast: bool, stages: Dict[str, dict]) -> None:
        self.work_dir = work_dir
        self.fast = fast
        self.stages = stages
        self._config_lock = threading.Lock()

    def __call__(self, name: str, options: List[str], key: Optional[str] = None,
                 extra: Sequence[str] = (), position: int = 0) -> str:
        """Train stage ``name`` (recorded as ``key``, default ``name``) with
        ``--cfg-options`` ``options`` + ``extra``; return its last checkpoint."""
        st = STAGES[name]
        key = key or name
        iters = st.fast_iters if self.fast else st.iters
        sdir = osp.join(self.work_dir, key)
        with self._config_lock:  # mmengine's config loading is not thread-safe (pkg_resources)
            cfg = stage_config(st, iters, sdir)
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', sdir]
        options = list(st.options) + options + list(extra)
        if options:
            cmd += ['--cfg-options'] + options
        wall = run_tool(cmd, osp.join(sdir, 'stdout.log'), f'{ORDER.index(name) + 1}. {key}', iters,
                        position=position)
        records = read_scalars(sdir)
        self.stages[key] = dict(config=cfg, iters=iters, wall_s=wall,
                                checkpoint=last_checkpoint(sdir),
                                losses=summarize_training(records), metrics=val_metrics(records),
                                s_per_iter=seconds_per_iter(records))
        if st.options or extra:
            self.stages[key]['options'] = list(st.options) + list(extra)
        return self.stages[key]['checkpoint']


def load_previous(wd: str, from_stage: str) -> dict:
    """The summary of the earlier run in ``wd`` that ``--from-stage`` builds on,
    without the stages that will run again."""
    path = osp.join(wd, 'summary.json')
    if not osp.isfile(path):
        raise DemoError(f'--from-stage needs the summary.json of an earlier full run in {wd}; '
                        'run the demo without --from-stage first')
    with open(path) as f:
        prev = json.load(f)
    S = prev.get('stages', {})
    if 'addp' not in S or 'transfer' not in prev or 'generation' not in prev:
        raise DemoError(f'{path} is from a run that did not reach the transfer stage; '
                        'run the demo without --from-stage')
    ckpt = S['addp']['checkpoint']
    if not osp.isfile(ckpt):
        raise DemoError(f'the ADDP checkpoint {ckpt} named in {path} is gone; run the demo '
                        'without --from-stage')
    rerun = DENSE_ORDER[DENSE_ORDER.index(from_stage):]
    dropped = [k for k in S if k.split('_')[0] in rerun]
    prev_total = prev['total_wall_s'] - sum(S[k]['wall_s'] for k in dropped)
    for k in dropped:
        del S[k]
    prev['dense'] = {k: v for k, v in prev.get('dense', {}).items() if k not in rerun}
    prev['resumed'] = dict(from_stage=from_stage, earlier_stages_wall_s=prev_total,
                           earlier_run_fast=prev['fast'])
    return prev


def start_summary(args: argparse.Namespace, wd: str, threads: int) -> dict:
    """A new summary, or with ``--from-stage`` the earlier run's (see
    :func:`load_previous`)."""
    if not args.from_stage:
        return dict(fast=args.fast, work_dir=wd, cpu_count=os.cpu_count(), threads=threads,
                    stages={})
    summary = load_previous(wd, args.from_stage)
    summary['work_dir'] = wd
    summary['threads'] = threads
    if summary['fast'] != args.fast:
        raise DemoError(f"the earlier run in {wd} was {'' if summary['fast'] else 'not '}"
                        f"a --fast run; give --fast the same way with --from-stage")
    return summary


def write_datasets(args: argparse.Namespace, wd: str, stages: Dict[str, dict]) -> Dict[str, str]:
    """The photo crops and the synthetic COCO / ADE sets under ``<wd>/data``
    (quick; the photo crops are also generated by the dataset class itself);
    returns their folders."""
    from addp_mm.datasets.embedded import build_embedded_photos
    from addp_mm.datasets.synthetic_dense import build_synthetic_ade, build_synthetic_coco
    data = osp.join(wd, 'data')
    roots = dict(data=data, photos=osp.join(data, 'embedded_photos_32px'))
    for task in DENSE_ORDER:
        roots[task] = osp.join(data, DENSE_DATA[task]['folder']) + '/'
    tds = time.time()
    build_embedded_photos(roots['photos'], crop_size=32, num_train=64, num_val=16)
    build_synthetic_coco(roots['detection'], **DENSE_DATA['detection']['build'])
    build_synthetic_ade(roots['segmentation'], **DENSE_DATA['segmentation']['build'])
    if not args.from_stage:
        stages['data'] = dict(wall_s=time.time() - tds, config='addp_mm/datasets', iters='-')
    return roots


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the demo with the command line ``argv`` (see :func:`parse_args`);
    return the summary it writes to ``summary.json``."""
    args = parse_args(argv)
    t0 = time.time()
    threads = set_threads(args.threads)
    args.jobs = args.jobs or default_jobs(threads)
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    summary = start_summary(args, wd, threads)
    S = summary['stages']
    mode = 'fast' if args.fast else 'full'
    if args.from_stage:
        mode += f', from stage {args.from_stage}'
    summary['jobs'] = args.jobs
    print(f'ADDP embedded demo -> {wd} ({mode} mode, {threads} thread(s) per stage, probe and '
          f'dense runs {args.jobs} at a time; change with --threads N / --jobs N)', flush=True)
    roots = write_datasets(args, wd, S)
    if args.data_only:
        print(f"datasets written under {roots['data']}", flush=True)
        return summary
    train = StageTrainer(wd, args.fast, S)
    if args.from_stage:
        addp_ckpt = S['addp']['checkpoint']
    else:
        addp_ckpt = run_upstream(args, summary, train, wd, roots['photos'])
    if not args.skip_dense:
        run_dense(args, summary, train, addp_ckpt, roots)
    return finish(summary, wd, t0)


def _dense_options(task: str, root: str) -> List[str]:
    opts = [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}']
    if task == 'detection':
        opts += [f'val_evaluator.ann_file={root}annotations/instances_val.json',
                 f'test_evaluator.ann_file={root}annotations/instances_val.json']
    return opts


def run_dense(args: argparse.Namespace, summary: dict, train: StageTrainer, addp_ckpt: str,
              roots: Dict[str, str]) -> None:
    """Stage 6: each dense task from the ADDP encoder and from a random init,
    same run otherwise, per seed (from ``--from-stage`` on)."""
    S = summary['stages']
    dense_seeds = list(range(args.dense_seeds or (1 if args.fast else 3)))
    start = DENSE_ORDER.index(args.from_stage) if args.from_stage else 0
    summary.setdefault('dense', {})
    for task in DENSE_ORDER[start:]:
        opts = _dense_options(task, roots[task])
        plan = [(seed, who, f'{task}_{who}' + (f'_seed{seed}' if seed else ''), init)
                for seed in dense_seeds for who, init in (('addp', addp_ckpt), ('random', None))]
        for _, _, key, _ in plan:  # the report lists the runs in this order
            S[key] = {}
        run_concurrently([(task, opts + [f'model.backbone.pretrained={init}',
                                         f'randomness.seed={seed}'], key, args.dense_options)
                          for seed, _, key, init in plan], args.jobs, train)
        runs = {'addp': [], 'random': []}
        for seed, who, key, _ in plan:
            m = S[key]['metrics']
            missing = [k for k in DENSE_METRICS[task] if k not in m]
            if missing:
                raise DemoError(f'the {task} run {key} logged no {missing}')
            loss = S[key]['losses'].get('loss', {})
            runs[who].append(dict(seed=seed, **{k: m[k] for k in DENSE_METRICS[task]},
                                  train_loss_first=loss.get('first'),
                                  train_loss_last=loss.get('last')))
        summary['dense'][task] = dense_summary(runs, DENSE_METRICS[task])


def finish(summary: dict, wd: str, t0: float) -> dict:
    """Write summary.json and REPORT.md; print the headline numbers."""
    this_run = time.time() - t0
    resumed = summary.get('resumed')
    if resumed:
        resumed['this_run_wall_s'] = this_run
        summary['total_wall_s'] = resumed['earlier_stages_wall_s'] + this_run
    else:
        summary['total_wall_s'] = this_run
    report = write_report(wd, summary)  # first: it adds the kNN curve (summary['knn'])
    with open(osp.join(wd, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    t = summary['transfer']
    print(f'\nlinear probe top-1 (mean of {len(t["seeds"])} seed(s)): ADDP {t["addp_top1"]:.2f}% vs '
          f'random init {t["random_top1"]:.2f}% (margin {t["margin"]:+.2f})')
    knn = summary.get('knn')
    if knn and knn['random_init'] is not None:
        print(f"kNN top-1 over pretraining: random init {knn['random_init']:.2f}% -> "
              f"{knn['last']:.2f}% at iteration {knn['last_iter']}")
    for task, d in summary.get('dense', {}).items():
        for k, m in d['metrics'].items():
            print(f'{task} {k} (mean of {len(d["seeds"])} seed(s)): ADDP {m["addp_mean"]:.4g} vs '
                  f'random init {m["random_mean"]:.4g} (margin {m["margin"]:+.4g}, per seed '
                  + ' / '.join(f'{x:+.4g}' for x in m['paired_margins']) + ')')
    print(f'done in {this_run / 60:.1f} min; report: {report}')
    return summary
