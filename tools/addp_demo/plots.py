"""PNG curves of the demo report: every stage's training loss (from its json
scalar log) and the kNN top-1 of the encoder over ADDP pretraining
(``ADDPKNNMonitorHook`` in the ADDP config), with the encoder at its random
init (the hook's evaluation at iteration 0) as a horizontal reference line."""
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

from .processes import read_scalars

Curve = List[Tuple[int, float]]

LOSSES_PNG = 'training_losses.png'
KNN_PNG = 'knn_top1.png'


def scalar_curve(records: Sequence[dict], key: str) -> Curve:
    """``(step, value)`` of every record holding ``key``, ordered by step (the
    last record of a step wins)."""
    by_step = {}
    for r in records:
        if key in r:
            by_step[int(r.get('step', r.get('iter', 0)))] = float(r[key])
    return sorted(by_step.items())


def knn_summary(records: Sequence[dict]) -> Optional[dict]:
    """The kNN top-1 curve of a run and its numbers; None if it logged none.

    ``random_init`` is the value at step 0 (the hook's ``eval_at_start``: the
    encoder before any update).
    """
    curve = scalar_curve(records, 'knn/top1')
    if not curve:
        return None
    times = [v for _, v in scalar_curve(records, 'knn/time')]
    best = max(curve, key=lambda sv: sv[1])
    return dict(curve=curve, random_init=curve[0][1] if curve[0][0] == 0 else None,
                last=curve[-1][1], last_iter=curve[-1][0], best=best[1], best_iter=best[0],
                top5_last=scalar_curve(records, 'knn/top5')[-1][1],
                mean_time_s=sum(times) / len(times) if times else None)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display
    return Figure(figsize=(width, height), dpi=100, layout='constrained')


def _save(fig, path: str) -> str:
    """Write the PNG under a temporary name, then rename it into place."""
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        fig.savefig(tmp, format='png')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.unlink(tmp)
    return path


def _panel_of(stage: str) -> Tuple[str, str]:
    """``'detection_random_seed1'`` -> ``('detection', 'random seed1')``: the
    runs of one task (both encoders, every seed) share a panel."""
    m = re.match(r'^(.*?)(?:_(addp|random))?(?:_(seed\d+))?$', stage)
    task, who, seed = m.group(1), m.group(2), m.group(3)
    return task, ' '.join(x for x in (who, seed) if x)


def plot_losses(curves: Dict[str, Curve], path: str, key: str = 'loss') -> str:
    """One panel per task: its training ``key`` over iterations, one line per
    run (ADDP-initialised runs blue, random-init runs orange, seeds fainter)."""
    panels: Dict[str, List[Tuple[str, Curve]]] = {}
    for name, curve in curves.items():
        if curve:
            task, run = _panel_of(name)
            panels.setdefault(task, []).append((run, curve))
    if not panels:
        raise ValueError('no training losses to plot')
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(3.6 * cols, 2.6 * rows)
    for i, (task, runs) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for run, curve in runs:
            steps, values = zip(*curve)
            color = 'C1' if run.startswith('random') else 'C0'
            ax.plot(steps, values, lw=1.1, color=color, alpha=0.5 if 'seed' in run else 1.0,
                    label=run or None)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel('iteration', fontsize=8)
        ax.set_ylabel(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if any(run for run, _ in runs):
            ax.legend(fontsize=6)
    return _save(fig, path)


def plot_knn(curve: Curve, path: str, random_init: Optional[float] = None,
             title: str = 'kNN top-1 during ADDP pretraining') -> str:
    """The kNN top-1 curve, with the random-init value as a dashed line."""
    if not curve:
        raise ValueError('no kNN values to plot')
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    steps, values = zip(*curve)
    ax.plot(steps, values, marker='o', ms=3, lw=1.5, label='ADDP encoder')
    if random_init is not None:
        ax.axhline(random_init, color='grey', ls='--', lw=1.2,
                   label=f'random init ({random_init:.1f} %)')
    ax.set_xlabel('pretraining iteration')
    ax.set_ylabel('kNN top-1 (%)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves_section(work_dir: str, summary: dict) -> List[str]:
    """Write both PNGs into ``work_dir`` (from each stage's folder there), put
    the kNN numbers into ``summary['knn']`` and return the report's lines."""
    curves = {name: scalar_curve(read_scalars(osp.join(work_dir, name)), 'loss')
              for name in summary.get('stages', {})}
    curves = {k: v for k, v in curves.items() if v}
    L = ['', '## Curves', '']
    if curves:
        plot_losses(curves, osp.join(work_dir, LOSSES_PNG))
        L += ["Each stage's training loss (`loss` of its json scalar log; the runs of one task "
              'share a panel: ADDP-initialised blue, random init orange, extra seeds fainter):',
              '',
              f'![training losses]({LOSSES_PNG})', '']
    knn = knn_summary(read_scalars(osp.join(work_dir, 'addp')))
    if knn is None:
        return L
    summary['knn'] = knn
    plot_knn(knn['curve'], osp.join(work_dir, KNN_PNG), knn['random_init'])
    start = ('' if knn['random_init'] is None else
             f"random init **{knn['random_init']:.2f} %** (iteration 0) -> ")
    L += ['Online kNN monitor of the ADDP stage (`ADDPKNNMonitorHook`: weighted kNN, k = 20, '
          'T = 0.07, on the L2-normalised mean-pooled patch features of the encoder; memory = '
          'the train crops without augmentation, queries = the 224 val crops): top-1 '
          f"{start}**{knn['last']:.2f} %** after {knn['last_iter']} iterations (best "
          f"{knn['best']:.2f} % at iteration {knn['best_iter']}; top-5 {knn['top5_last']:.2f} %)"
          + ('' if knn['mean_time_s'] is None else
             f", {knn['mean_time_s']:.2f} s per evaluation") + '. The dashed line is the same '
          'encoder at its random init, evaluated by the same hook before the first update.', '',
          f'![kNN top-1 over pretraining]({KNN_PNG})', '']
    return L
