"""The embedded demo: the whole ADDP story on real images, on a CPU, from scratch.

``make demo`` runs this script. Every stage is an ordinary config under
``configs/demo/`` run as a subprocess through ``tools/train.py`` or
``tools/sample.py``; outputs go to ``--work-dir`` (``work_dirs/demo``):

1. ``tokenizer/``    VQGAN tokenizer trained from scratch (VQGANTrainer);
2. ``predictor/``    MAGE-style token predictor on its tokens (MAGEPredictorTrainer);
3. ``addp/``         ADDP pretraining with both frozen;
4. ``samples/``      unconditional generation: a grid and per-step denoising strips;
5. ``transfer_*``    linear probe of the ADDP encoder vs the same encoder randomly
                     initialised: "which photo does this 32 px crop come from";
6. ``detection_*``, ``segmentation_*``  Mask R-CNN / UperNet on small
                     COCO/ADE-format datasets made from the real textures, each
                     from the ADDP encoder and from the same encoder randomly
                     initialised, same budget, several seeds.

The data is generated on first use under ``<work-dir>/data`` from the photos
bundled with scikit-image (no download). The last step writes
``<work-dir>/REPORT.md`` (losses, metrics, images, wall times) and
``<work-dir>/summary.json`` (the same numbers, machine-readable).

Examples::

    python tools/demo.py                       # full demo (~22 min on an idle 2-core CPU)
    python tools/demo.py --fast --work-dir work_dirs/demo_fast   # CI-sized run
    python tools/demo.py --from-stage detection   # re-run only the dense comparison
    # an ablation of the segmentation comparison on a copy of a finished run:
    cp -r work_dirs/demo work_dirs/demo_frozen
    python tools/demo.py --work-dir work_dirs/demo_frozen --from-stage segmentation \
        --dense-options model.backbone.frozen_stages=4
    python tools/demo.py --threads 4           # more intra-op threads on an idle machine
    python tools/demo.py --data-only           # only write the datasets under <work-dir>/data

Threads: every stage runs with ``--threads`` intra-op threads (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``torch.set_num_threads``). The
default is the value of ``OMP_NUM_THREADS`` if set, else 1: the demo's models are
tiny, and on a busy 2-core machine one thread was ten times faster per ADDP step
(0.52 s) than torch's default (5.0 s). The linear probes and the dense runs are
independent processes and run ``--jobs`` at a time (default: what fits on the
cores at ``--threads`` each, at most 2); their numbers do not depend on it.
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
CFG_DIR = osp.join(ROOT, 'configs', 'demo')
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

ITER_RE = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


@dataclass
class Stage:
    """One training stage: a config and its iteration budgets."""
    name: str
    title: str
    config: str
    iters: int  # full mode
    fast_iters: int
    #: ``--cfg-options`` the demo always adds (budget choices made here, not in the config)
    options: Tuple[str, ...] = ()
    outputs: Dict = field(default_factory=dict)


STAGES = {
    'tokenizer': Stage('tokenizer', 'VQGAN tokenizer (reconstruction + codebook + commitment)',
                       'vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py', 600, 60),
    'predictor': Stage('predictor', 'MAGE token predictor (masked token modelling)',
                       'mage_vit-tiny-d2_1xb32-1200i_embedded-32px.py', 1200, 40),
    'addp': Stage('addp', 'ADDP pretraining', 'addp_vit-tiny-p4_1xb32-1500i_embedded-32px.py',
                  1500, 60),
    'transfer_addp': Stage('transfer_addp', 'Linear probe, ADDP encoder',
                           'vit-tiny-p4_addp-pre_linear-probe_1xb64-150i_embedded-32px.py', 150,
                           50),
    'transfer_random': Stage('transfer_random', 'Linear probe, random-init encoder',
                             'vit-tiny-p4_random-init_linear-probe_1xb64-150i_embedded-32px.py',
                             150, 50),
    'detection': Stage('detection', 'Mask R-CNN on synthetic COCO',
                       'mask-rcnn_addp-vit-tiny-p4_simple-fpn_1xb4-150i_synthetic-coco-128px.py',
                       80, 10),
    'segmentation': Stage('segmentation', 'UperNet on synthetic ADE',
                          'addp-vit-tiny-p4_upernet_1xb8-200i_synthetic-ade-64px.py', 100, 10),
}
ORDER = ['tokenizer', 'predictor', 'addp', 'samples', 'transfer_addp', 'transfer_random',
         'detection', 'segmentation']
DENSE_ORDER = ['detection', 'segmentation']
#: what the dense comparison reads from each run's validation
DENSE_METRICS = {'detection': ('coco/bbox_mAP', 'coco/segm_mAP'), 'segmentation': ('mIoU', )}
#: the generated datasets (addp_mm/datasets/synthetic_dense.py) and their folders under data/
DENSE_DATA = {
    'detection': dict(folder='synthetic_coco_128px',
                      build=dict(image_size=128, num_train=64, num_val=16)),
    'segmentation': dict(folder='synthetic_ade_64px',
                         build=dict(image_size=64, num_train=64, num_val=16)),
}


class DemoError(SystemExit):

    def __init__(self, msg: str) -> None:
        super().__init__(f'demo error: {msg}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Run the embedded ADDP demo end to end')
    p.add_argument('--work-dir', default='work_dirs/demo', help='output folder')
    p.add_argument('--fast', action='store_true',
                   help='reduced iteration counts (the test suite runs this)')
    p.add_argument('--num-samples', type=int, default=None,
                   help='images to generate (default 16, 4 with --fast)')
    p.add_argument('--probe-seeds', type=int, default=None,
                   help='linear probes per encoder, seeds 0..N-1; the margin is the mean over '
                   'them (default 3, 1 with --fast)')
    p.add_argument('--dense-seeds', type=int, default=None,
                   help='detection / segmentation runs per encoder (ADDP and random init), seeds '
                   '0..N-1 (default 3, 1 with --fast)')
    p.add_argument('--skip-dense', action='store_true',
                   help='stop after the transfer stage (no detection / segmentation runs)')
    p.add_argument('--threads', type=int, default=None,
                   help='intra-op threads of every stage (default: $OMP_NUM_THREADS, else 1)')
    p.add_argument('--jobs', type=int, default=None,
                   help='runs at a time for the linear probes and the dense comparison (their '
                   'runs are independent); default: as many as fit on the CPU cores at --threads '
                   'each, at most 2. The numbers do not depend on it')
    p.add_argument('--data-only', action='store_true',
                   help='write the photo crops and the synthetic COCO/ADE sets under '
                   '<work-dir>/data, then stop')
    p.add_argument('--dense-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options for every detection / segmentation run of both '
                   'encoders (ablations, e.g. model.backbone.frozen_stages=4); REPORT.md lists them')
    p.add_argument('--from-stage', choices=DENSE_ORDER, default=None,
                   help='re-run only this dense stage and the ones after it on the ADDP '
                   'checkpoint of an earlier run in --work-dir (its summary.json); the earlier '
                   'stages, their numbers and wall times are taken from that run')
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error('--threads must be at least 1')
    if args.jobs is not None and args.jobs < 1:
        p.error('--jobs must be at least 1')
    if args.probe_seeds is not None and args.probe_seeds < 1:
        p.error('--probe-seeds must be at least 1')
    if args.dense_seeds is not None and args.dense_seeds < 1:
        p.error('--dense-seeds must be at least 1')
    bad = [o for o in args.dense_options if '=' not in o]
    if bad:
        p.error(f'--dense-options takes KEY=VALUE pairs (as --cfg-options does), got {bad}')
    if args.dense_options and args.skip_dense:
        p.error('--dense-options changes the dense runs; it cannot be combined with --skip-dense')
    if args.from_stage and args.skip_dense:
        p.error('--from-stage re-runs dense stages; it cannot be combined with --skip-dense')
    return args


# ---------------------------------------------------------------------------
# configs and subprocesses
# ---------------------------------------------------------------------------
def _scale_schedule(schedulers, base_iters: int, iters: int) -> list:
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    out = []
    for s in schedulers:
        s = dict(s)
        if s.get('by_epoch', True):
            raise DemoError(f'cannot rescale the epoch-based scheduler {s}')
        begin = int(round(s.get('begin', 0) * iters / base_iters))
        end = int(round(min(s.get('end', base_iters), base_iters) * iters / base_iters))
        end = max(end, begin + 1)
        s['begin'], s['end'] = begin, end
        if 'T_max' in s:
            s['T_max'] = end - begin
        out.append(s)
    return out


def stage_config(stage: Stage, iters: int, out_dir: str) -> str:
    """The config to run: the stage's own file, or (other iteration count) a
    child config next to the outputs that only rescales the iteration budget."""
    path = osp.join(CFG_DIR, stage.config)
    from mmengine.config import Config
    cfg = Config.fromfile(path, import_custom_modules=False)
    base_iters = int(cfg.train_cfg.max_iters)
    if iters == base_iters:
        return path
    train_cfg = dict(max_iters=iters)
    if 'val_interval' in cfg.train_cfg:
        train_cfg['val_interval'] = iters
    lines = [
        f'# {stage.name}: {stage.config} with {iters} instead of {base_iters} iterations, '
        'the schedule rescaled (written by tools/demo.py)',
        f'_base_ = [{path!r}]',
        f'train_cfg = {train_cfg!r}',
        f'param_scheduler = {_scale_schedule(cfg.param_scheduler, base_iters, iters)!r}',
        f'default_hooks = dict(checkpoint=dict(interval={iters}), '
        f'logger=dict(interval={max(1, min(10, iters // 5))}))',
    ]
    if cfg.get('custom_hooks'):
        hooks = [dict(h, interval=iters) if 'interval' in h else dict(h) for h in cfg.custom_hooks]
        lines.append(f'custom_hooks = {hooks!r}')
    os.makedirs(out_dir, exist_ok=True)
    child = osp.join(out_dir, osp.splitext(stage.config)[0] + f'_{iters}i.py')
    with open(child, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return child


THREAD_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


def set_threads(threads: Optional[int]) -> int:
    """Use ``threads`` (default ``$OMP_NUM_THREADS`` or 1) here and in every stage."""
    if threads is None:
        env = os.environ.get('OMP_NUM_THREADS', '')
        threads = int(env) if env.isdigit() and int(env) > 0 else 1
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    import torch
    torch.set_num_threads(threads)
    return threads


def default_jobs(threads: int) -> int:
    """Concurrent runs that fit on this machine's cores at ``threads`` each
    (at most 2: one ADDP and one random-init run of a pair)."""
    return max(1, min(2, (os.cpu_count() or 1) // threads))


def run_concurrently(jobs: Sequence[Tuple[str, List[str], str, Sequence[str]]], workers: int,
                     train) -> None:
    """``train(name, options, key=key, extra=extra, position=p)`` for every
    job, ``workers`` at a time (``p``: a free progress-bar line); each run is
    its own single-process ``tools/train.py``, so the results do not depend
    on ``workers``. The first failure is raised once all runs have ended."""
    import queue
    from concurrent.futures import ThreadPoolExecutor
    lines: 'queue.Queue[int]' = queue.Queue()
    for i in range(workers):
        lines.put(i)

    def one(job):
        name, options, key, extra = job
        line = lines.get()
        try:
            return train(name, options, key=key, extra=extra, position=line)
        finally:
            lines.put(line)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, job) for job in jobs]
    for f in futures:
        f.result()


def run_tool(cmd: List[str], log_path: str, desc: str, total: Optional[int],
             position: int = 0) -> float:
    """Run ``cmd`` (output to ``log_path``) with a progress bar (on line
    ``position`` when several run at once); return wall seconds."""
    from tqdm import tqdm
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.setdefault('PYTHONWARNINGS', 'ignore')
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    start = time.time()
    with open(log_path, 'w') as log, tqdm(total=total, desc=desc, unit='it', leave=True,
                                          dynamic_ncols=True, position=position) as bar:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = ITER_RE.search(line)
            if m and total:
                bar.n = min(int(m.group(1)), total)
                bar.refresh()
        rc = proc.wait()
        if rc == 0 and total:
            bar.n = total
            bar.refresh()
    if rc != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-30:])
        raise DemoError(f'stage "{desc}" failed (exit {rc}); last lines of {log_path}:\n{tail}')
    return time.time() - start


def last_checkpoint(work_dir: str) -> str:
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    ckpts = sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')),
                   key=lambda p: int(re.findall(r'iter_(\d+)', p)[-1]))
    if not ckpts:
        raise DemoError(f'no checkpoint written in {work_dir}')
    return ckpts[-1]


def read_scalars(work_dir: str) -> List[dict]:
    """Records of the newest run's ``vis_data/scalars.json``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


LOSS_KEYS = ('loss', 'loss_rec', 'loss_codebook', 'loss_commit', 'loss_mtm', 'acc_masked',
             'usage', 'perplexity', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
             'loss_mask', 'decode.loss_ce', 'aux.loss_ce', 'decode.acc_seg')


def seconds_per_iter(records: List[dict]) -> Optional[float]:
    """Median logged training step time (mmengine's ``time``: data + forward +
    backward + update, averaged over each logging window)."""
    ts = sorted(float(r['time']) for r in records if 'loss' in r and 'time' in r)
    return ts[len(ts) // 2] if ts else None


def summarize_training(records: List[dict]) -> Dict[str, dict]:
    """First / last / min of each logged training value."""
    train = [r for r in records if 'loss' in r]
    out = {}
    for key in LOSS_KEYS:
        vals = [(r.get('iter', r.get('step')), float(r[key])) for r in train if key in r]
        if vals:
            out[key] = dict(first=vals[0][1], last=vals[-1][1], min=min(v for _, v in vals),
                            first_iter=vals[0][0], last_iter=vals[-1][0])
    return out


def val_metrics(records: List[dict]) -> Dict[str, float]:
    """The last validation record (keys without 'loss', 'lr', 'time')."""
    vals = [r for r in records if 'loss' not in r and any(
        k.startswith(('accuracy', 'coco', 'mIoU', 'aAcc', 'mAcc')) for k in r)]
    if not vals:
        return {}
    return {k: float(v) for k, v in vals[-1].items() if isinstance(v, (int, float)) and k != 'step'}


# ---------------------------------------------------------------------------
# in-process checks and pictures
# ---------------------------------------------------------------------------
def tensors_digest(ckpt: str, prefix: str) -> str:
    """SHA-1 over the tensors under ``prefix`` of a checkpoint (sorted keys)."""
    import torch
    from addp_mm.utils.checkpoint import load_external_state_dict
    sd = load_external_state_dict(ckpt, keys=('state_dict', ))
    h = hashlib.sha1()
    keys = sorted(k for k in sd if k.startswith(prefix))
    if not keys:
        raise DemoError(f'{ckpt} has no "{prefix}" weights')
    for k in keys:
        h.update(k[len(prefix):].encode())
        h.update(sd[k].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _upscale(src: str, dst: str, factor: int) -> str:
    from PIL import Image
    with Image.open(src) as im:
        im.resize((im.width * factor, im.height * factor), Image.NEAREST).save(dst)
    return dst


def evaluate_tokenizer(ckpt: str, cfg_path: str, data_root: str, out_png: str) -> dict:
    """Reconstruct val crops with the trained tokenizer loaded the way the
    ADDP config loads it; PSNR, L1, codebook usage and a picture."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from PIL import Image

    import addp_mm  # noqa: F401
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS
    MMLogger.get_instance('addp_demo', log_level='WARNING')  # quiet init/load messages
    cfg = Config.fromfile(cfg_path, import_custom_modules=False)
    tok_cfg = dict(cfg.model.tokenizer, checkpoint=ckpt)
    tok = MODELS.build(tok_cfg)
    tok.init_weights()
    lines = open(osp.join(data_root, 'meta', 'val.txt')).read().split('\n')
    paths = [osp.join(data_root, ln.split()[0]) for ln in lines if ln.strip()]
    imgs = torch.stack([
        torch.from_numpy(np.array(Image.open(p).convert('RGB'))).permute(2, 0, 1).float() / 255.
        for p in paths])
    with torch.no_grad():
        ids, quant = tok.encode(imgs)
        rec = tok.decode(quant).clamp(0, 1)
    mse = ((rec - imgs)**2).mean().item()
    usage = ids.unique().numel() / tok.num_embeddings
    pick = torch.linspace(0, len(imgs) - 1, 14).long()
    row = lambda t: np.concatenate(list((t.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)), 1)  # noqa
    pic = np.concatenate([row(imgs[pick]), row(rec[pick])], 0)
    Image.fromarray(pic).resize((pic.shape[1] * 3, pic.shape[0] * 3), Image.NEAREST).save(out_png)
    return dict(psnr=10 * np.log10(1. / max(mse, 1e-12)), l1=(rec - imgs).abs().mean().item(),
                codebook_usage=usage, num_val_images=len(imgs))


def stack_strips(step_pngs: List[str], dst: str, factor: int = 3) -> str:
    from PIL import Image
    ims = [Image.open(p).convert('RGB') for p in step_pngs]
    w, h = max(i.width for i in ims), sum(i.height for i in ims)
    canvas = Image.new('RGB', (w, h))
    y = 0
    for im in ims:
        canvas.paste(im, (0, y))
        y += im.height
    canvas.resize((w * factor, h * factor), Image.NEAREST).save(dst)
    return dst


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def _show_path(path: str, work_dir: str) -> str:
    path = str(path)
    if not osp.isabs(path):
        return path
    for base in (work_dir, ROOT):
        if path.startswith(base + os.sep):
            return osp.relpath(path, base)
    return path


DENSE_TITLES = {
    'detection': 'Mask R-CNN on synthetic COCO scenes (coin / horse, 128 px)',
    'segmentation': 'UperNet on synthetic ADE scenes (grass / gravel / brick / coin / horse, 64 px)',
}


def _metric_fmt(k: str) -> str:
    return '.3f' if k.startswith('coco/') else '.2f'


def dense_report(summary: dict) -> List[str]:
    """Section 6: per task and metric, per-seed values for both encoders, the
    paired margins, their mean and spread."""
    dense = summary.get('dense') or {}
    if not dense:
        return ['## 6. Detection and segmentation', '', 'Skipped (`--skip-dense`).', '']
    S = summary['stages']
    L = ['## 6. Transfer to dense tasks: ADDP encoder vs random init', '',
         'Each task is trained twice per seed with the same config, budget and seed (head '
         'initialisation, data order, augmentation): once with the backbone loaded from the '
         'ADDP checkpoint of stage 3 (`model.backbone.pretrained=<ckpt>`), once with the same '
         'backbone randomly initialised (`model.backbone.pretrained=None`). A margin is ADDP '
         'minus random init for the same seed; std is the sample standard deviation of the '
         'per-seed margins.', '']
    for task, d in dense.items():
        first = S.get(f'{task}_addp', {})
        L += [f'### {DENSE_TITLES.get(task, task)}', '']
        if first:
            opts = first.get('options')
            L += [f"`{_show_path(first['config'], summary['work_dir'])}`, {first['iters']} "
                  'iterations per run' + (', with `' + ' '.join(opts) + '`' if opts else '')
                  + '.', '']
        for k, m in d['metrics'].items():
            f = _metric_fmt(k)
            L += [f'| seed | ADDP-pretrained {k} | random init {k} | margin |',
                  '|---|---|---|---|']
            for x, y, dm in zip(d['addp_runs'], d['random_runs'], m['paired_margins']):
                L.append(f"| {x['seed']} | {x[k]:{f}} | {y[k]:{f}} | {dm:+{f}} |")
            L.append(f"| **mean** | **{m['addp_mean']:{f}}** | {m['random_mean']:{f}} "
                     f"| **{m['margin']:+{f}}** |")
            std = '-' if m['margin_std'] is None else f"{m['margin_std']:{f}}"
            verdict = 'ADDP better' if m['margin'] > 0 else 'ADDP NOT better'
            if m['margin'] > 0 and m['min_margin'] <= 0:
                verdict += ' on average, not for every seed'
            L += ['', f"{k} margin: **{m['margin']:+{f}}** (std {std}, min "
                  f"{m['min_margin']:+{f}}, max {m['max_margin']:+{f}}; {verdict}).", '']
            if m['margin_std'] is not None and abs(m['margin']) <= m['margin_std']:
                L += [f'The mean margin is smaller than its spread over seeds: with '
                      f"{len(d['seeds'])} seeds it cannot be told apart from seed noise.", '']
        L += _dense_diagnosis(task, d)
    return L


def _dense_diagnosis(task: str, d: dict) -> List[str]:
    """Plain words when ADDP does not win a metric, with the measured training
    losses of both inits (does the pretrained start fit the task faster?)."""
    losing = [k for k, m in d['metrics'].items() if m['margin'] <= 0]
    la, lr = d.get('addp_train_loss_last'), d.get('random_train_loss_last')
    fa, fr = d.get('addp_train_loss_first'), d.get('random_train_loss_first')
    L = []
    if la is not None and lr is not None:
        L += [f'Training loss (mean over seeds, first -> last logged): ADDP {fa:.3f} -> '
              f'{la:.3f}, random init {fr:.3f} -> {lr:.3f}.', '']
    if not losing:
        return L
    text = (f"**The ADDP encoder does NOT beat random init on {', '.join(losing)} here.** ")
    if la is not None and lr is not None:
        if la >= lr:
            text += ('Its runs also end with a training loss no lower than the random-init runs, '
                     'so at this scale the pretrained weights are not an easier starting point '
                     'for this task than a random initialisation in the same budget.')
        else:
            text += ('Its runs end with a lower training loss than the random-init runs but do '
                     'not score higher on the val scenes: the pretrained start fits the training '
                     'scenes faster without generalising better.')
    text += (' Ablations of this comparison (fine-tuning recipe, frozen encoder, pretraining '
             'resolution), how to re-run them with `--dense-options`, and what they show about '
             'why: `docs/demo/TRANSFER_ABLATIONS.md` in the repository.')
    return L + [text, '']


def write_report(work_dir: str, summary: dict) -> str:
    S = summary['stages']
    L = ['# ADDP embedded demo report', '',
         f"Mode: **{'fast (CI)' if summary['fast'] else 'full'}**, "
         f"{summary['cpu_count']} CPU cores, total wall time **{summary['total_wall_s'] / 60:.1f} min** "
         f"({summary['total_wall_s']:.0f} s).", '']
    if summary.get('jobs', 1) > 1:
        L += [f"The linear probes and the dense runs ran {summary['jobs']} at a time "
              f"(`--jobs {summary['jobs']}`, {summary.get('threads', 1)} thread(s) each), so their "
              'wall times below overlap and add up to more than the total.', '']
    resumed = summary.get('resumed')
    if resumed:
        L += [f"Stages from `{resumed['from_stage']}` on were re-run with `--from-stage "
              f"{resumed['from_stage']}` ({resumed['this_run_wall_s'] / 60:.1f} min) on the ADDP "
              'checkpoint of an earlier run in this folder; the earlier stages, their numbers and '
              f"wall times ({resumed['earlier_stages_wall_s'] / 60:.1f} min) are that run's, and "
              'the total is their sum.', '']
    L += [
         'Every stage is an ordinary config under `configs/demo/` run through `tools/train.py` '
         '(or `tools/sample.py`); its folder holds the config that ran, the log (`stdout.log`) '
         'and the checkpoint. Data: crops of the photos bundled with scikit-image '
         '(`addp_mm/datasets/embedded.py`) and scenes made from them '
         '(`addp_mm/datasets/synthetic_dense.py`).', '',
         '## Stages', '',
         '| stage | config | iterations | s / iteration | wall time |', '|---|---|---|---|---|']
    for name, st in S.items():
        if st:
            spi = st.get('s_per_iter')
            L.append(f"| {name} | `{_show_path(st['config'], work_dir)}` "
                     f"| {st.get('iters', '-')} | {'-' if spi is None else f'{spi:.3f}'} "
                     f"| {st['wall_s']:.1f} s |")
    L += ['', '## Training losses', '',
          '| stage | value | first | last | min |', '|---|---|---|---|---|']
    for name in S:
        for key, v in S[name].get('losses', {}).items():
            L.append(f"| {name} | {key} | {_fmt(v['first'])} (iter {v['first_iter']}) | "
                     f"{_fmt(v['last'])} (iter {v['last_iter']}) | {_fmt(v['min'])} |")
    tk = S['tokenizer'].get('eval', {})
    L += ['', '## 1. Tokenizer', '',
          f"Val crops (top) and their reconstructions through the 8x8 token grid (bottom): "
          f"PSNR **{tk.get('psnr', float('nan')):.2f} dB**, L1 {tk.get('l1', float('nan')):.4f}, "
          f"{100 * tk.get('codebook_usage', 0):.0f}% of the codebook used on "
          f"{tk.get('num_val_images', 0)} val crops.", '',
          '![tokenizer reconstructions](tokenizer_reconstructions.png)', '']
    pr = S['predictor'].get('losses', {}).get('acc_masked')
    if pr:
        L += ['## 2. Token predictor', '',
              f"Masked-token accuracy on training batches: {pr['first']:.3f} -> {pr['last']:.3f} "
              '(chance = 1/128).', '']
    g = summary['generation']
    L += ['## 3-4. ADDP pretraining and generation', '',
          f"{g['num_samples']} unconditional samples ({g['num_steps']} alternating denoising steps), "
          'decoded by the stage-1 tokenizer '
          f"({'verified' if g['decoded_by_trained_tokenizer'] else 'NOT verified'}: the ADDP "
          f"checkpoint's tokenizer weights have digest `{g['addp_tokenizer_sha1'][:12]}`, the "
          f"trained tokenizer `{g['trained_tokenizer_sha1'][:12]}`).", '',
          '![sample grid](samples_grid.png)', '',
          'Denoising steps (left to right; top: pixels x_t, grey before the first decode; '
          'bottom: the mask, white = still masked):', '',
          '![denoising strips](denoising_strips.png)', '']
    t = summary['transfer']
    n = len(t['seeds'])
    L += ['## 5. Transfer: which photo does a crop come from? (14 classes)', '',
          'A linear probe (frozen encoder, mean-pooled patch features, BatchNorm, linear layer) '
          'trained on the train crops and evaluated on 224 val crops, for the ADDP-pretrained '
          'encoder and for the same encoder randomly initialised; '
          f"{n} probe seed(s) each (seed = probe initialisation and data order).", '',
          '| seed | ADDP-pretrained top-1 (%) | random init top-1 (%) | margin |',
          '|---|---|---|---|']
    for x, y, d in zip(t['addp_runs'], t['random_runs'], t['paired_margins']):
        L.append(f"| {x['seed']} | {x['top1']:.2f} | {y['top1']:.2f} | {d:+.2f} |")
    L += [f"| **mean** | **{t['addp_top1']:.2f}** | {t['random_top1']:.2f} | **{t['margin']:+.2f}** |",
          '', f"Margin: **{t['margin']:+.2f}** points "
          f"({'ADDP better' if t['margin'] > 0 else 'ADDP NOT better'}; smallest per-seed margin "
          f"{t['min_paired_margin']:+.2f}).", '',
          'The demo pretrains without reliable-token conditioning (`use_reliable_tokens=False`, '
          "one of the paper's ablations) and without dropout. With the reference decoder the "
          'appended ground-truth token embeddings already determine the toy teacher\'s target, so '
          'the decoder matches it alone and the pixel encoder gets almost no learning signal (its '
          'probe accuracy then ends below random init); without them the only route from the '
          'visible tokens to the prediction is the encoder reading x_t.', '']
    if t['margin'] <= 0:
        L += ['At this scale that is still not enough to beat random init on this probe. A '
              'randomly initialised ViT is close to a linear map of its patches, so its mean-pooled '
              'features already separate the 14 photos by colour statistics (about 96 % top-1); '
              'the toy pretraining (1500 steps, a weak teacher whose target is only ~0.3 nats '
              'sharper than the batch-average code distribution) moves the encoder away from that '
              'without yet giving it better features.', '']
    L += dense_report(summary)
    path = osp.join(work_dir, 'REPORT.md')
    with open(path, 'w') as f:
        f.write('\n'.join(L))
    return path


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
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


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    threads = set_threads(args.threads)
    args.jobs = args.jobs or default_jobs(threads)
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    py = sys.executable
    data = osp.join(wd, 'data')
    photos = osp.join(data, 'embedded_photos_32px')
    coco = osp.join(data, DENSE_DATA['detection']['folder']) + '/'
    ade = osp.join(data, DENSE_DATA['segmentation']['folder']) + '/'
    num_samples = args.num_samples or (4 if args.fast else 16)
    if args.from_stage:
        summary = load_previous(wd, args.from_stage)
        summary['work_dir'] = wd
        summary['threads'] = threads
        if summary['fast'] != args.fast:
            raise DemoError(f"the earlier run in {wd} was {'' if summary['fast'] else 'not '}"
                            f"a --fast run; give --fast the same way with --from-stage")
    else:
        summary = dict(fast=args.fast, work_dir=wd, cpu_count=os.cpu_count(), threads=threads,
                       stages={})
    S = summary['stages']

    mode = 'fast' if args.fast else 'full'
    if args.from_stage:
        mode += f', from stage {args.from_stage}'
    summary['jobs'] = args.jobs
    print(f'ADDP embedded demo -> {wd} ({mode} mode, {threads} thread(s) per stage, probe and '
          f'dense runs {args.jobs} at a time; change with --threads N / --jobs N)', flush=True)
    # datasets (quick; the photo crops are also generated by the dataset class itself)
    from addp_mm.datasets.embedded import build_embedded_photos
    from addp_mm.datasets.synthetic_dense import build_synthetic_ade, build_synthetic_coco
    tds = time.time()
    build_embedded_photos(photos, crop_size=32, num_train=64, num_val=16)
    build_synthetic_coco(coco, **DENSE_DATA['detection']['build'])
    build_synthetic_ade(ade, **DENSE_DATA['segmentation']['build'])
    if not args.from_stage:
        S['data'] = dict(wall_s=time.time() - tds, config='addp_mm/datasets', iters='-')
    if args.data_only:
        print(f'datasets written under {data}', flush=True)
        return summary

    config_lock = threading.Lock()

    def train(name: str, options: List[str], key: Optional[str] = None,
              extra: Sequence[str] = (), position: int = 0) -> str:
        st = STAGES[name]
        key = key or name
        iters = st.fast_iters if args.fast else st.iters
        sdir = osp.join(wd, key)
        with config_lock:  # mmengine's config loading is not thread-safe (pkg_resources)
            cfg = stage_config(st, iters, sdir)
        cmd = [py, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', sdir]
        options = list(st.options) + options + list(extra)
        if options:
            cmd += ['--cfg-options'] + options
        wall = run_tool(cmd, osp.join(sdir, 'stdout.log'), f'{ORDER.index(name) + 1}. {key}', iters,
                        position=position)
        records = read_scalars(sdir)
        S[key] = dict(config=cfg, iters=iters, wall_s=wall, checkpoint=last_checkpoint(sdir),
                      losses=summarize_training(records), metrics=val_metrics(records),
                      s_per_iter=seconds_per_iter(records))
        if st.options or extra:
            S[key]['options'] = list(st.options) + list(extra)
        return S[key]['checkpoint']

    if args.from_stage:
        addp_ckpt = S['addp']['checkpoint']
    else:
        addp_ckpt = run_upstream(args, summary, train, wd, photos, num_samples)
    # 6. dense tasks: the same run from the ADDP encoder and from a random init, per seed
    if args.skip_dense:
        return finish(summary, wd, t0)
    dense_seeds = list(range(args.dense_seeds or (1 if args.fast else 3)))
    roots = dict(detection=coco, segmentation=ade)
    start = DENSE_ORDER.index(args.from_stage) if args.from_stage else 0
    summary.setdefault('dense', {})
    for task in DENSE_ORDER[start:]:
        root = roots[task]
        opts = [f'train_dataloader.dataset.data_root={root}',
                f'val_dataloader.dataset.data_root={root}',
                f'test_dataloader.dataset.data_root={root}']
        if task == 'detection':
            opts += [f'val_evaluator.ann_file={root}annotations/instances_val.json',
                     f'test_evaluator.ann_file={root}annotations/instances_val.json']
        runs = {'addp': [], 'random': []}
        plan = [(seed, who, f'{task}_{who}' + (f'_seed{seed}' if seed else ''), init)
                for seed in dense_seeds for who, init in (('addp', addp_ckpt), ('random', None))]
        for _, _, key, _ in plan:  # the report lists the runs in this order
            S[key] = {}
        run_concurrently([(task, opts + [f'model.backbone.pretrained={init}',
                                         f'randomness.seed={seed}'], key, args.dense_options)
                          for seed, _, key, init in plan], args.jobs, train)
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
    return finish(summary, wd, t0)


def run_upstream(args: argparse.Namespace, summary: dict, train, wd: str, photos: str,
                 num_samples: int) -> str:
    """Stages 1-5 (tokenizer, predictor, ADDP, samples, linear probe); returns
    the ADDP checkpoint."""
    S = summary['stages']
    py = sys.executable
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
    sdir = osp.join(wd, 'samples')
    cmd = [py, osp.join(ROOT, 'tools', 'sample.py'), S['addp']['config'], addp_ckpt, '--num',
           str(num_samples), '--batch-size', str(num_samples), '--out-dir', sdir, '--save-steps',
           '--device', 'cpu', '--seed', '0']
    wall = run_tool(cmd, osp.join(sdir, 'stdout.log'), '4. samples', None)
    grid = osp.join(sdir, 'grid.png')
    strips = sorted(glob.glob(osp.join(sdir, 'steps', '*.png')))[:4]
    if not osp.isfile(grid) or not strips:
        raise DemoError(f'tools/sample.py wrote no grid/strips to {sdir}')
    _upscale(grid, osp.join(wd, 'samples_grid.png'), 4)
    stack_strips(strips, osp.join(wd, 'denoising_strips.png'))
    from mmengine.config import Config
    steps = Config.fromfile(S['addp']['config'], import_custom_modules=False).model.sampler.num_steps
    addp_tok, vq_tok = tensors_digest(addp_ckpt, 'tokenizer.'), tensors_digest(vq_ckpt, 'tokenizer.')
    S['samples'] = dict(config=S['addp']['config'], iters='-', wall_s=wall)
    summary['generation'] = dict(
        grid=grid, strips=strips, num_samples=num_samples, num_steps=steps,
        addp_tokenizer_sha1=addp_tok, trained_tokenizer_sha1=vq_tok,
        decoded_by_trained_tokenizer=addp_tok == vq_tok)
    # 5. transfer: the same probe on both encoders, one run per seed (probe init + data order)
    seeds = list(range(args.probe_seeds or (1 if args.fast else 3)))
    probe_opts = photo_opts + [f'val_dataloader.dataset.data_root={photos}']
    runs = {'addp': [], 'random': []}
    plan = [(seed, who, name, name if seed == 0 else f'{name}_seed{seed}', extra)
            for seed in seeds
            for who, name, extra in (('addp', 'transfer_addp',
                                      [f'model.backbone.init_cfg.checkpoint={addp_ckpt}']),
                                     ('random', 'transfer_random', []))]
    for *_, key, _ in plan:  # the report lists the runs in this order
        S[key] = {}
    run_concurrently([(name, probe_opts + extra + [f'randomness.seed={seed}'], key, ())
                      for seed, _, name, key, extra in plan], args.jobs, train)
    for seed, who, _, key, _ in plan:
        m = S[key]['metrics']
        if 'accuracy/top1' not in m:
            raise DemoError(f'the linear-probe run {key} logged no accuracy/top1')
        runs[who].append(dict(seed=seed, top1=m['accuracy/top1'],
                              top5=m.get('accuracy/top5', float('nan'))))
    summary['transfer'] = transfer_summary(runs)
    return addp_ckpt


def dense_summary(runs: Dict[str, List[dict]], metrics: Sequence[str]) -> dict:
    """Per metric: the paired margins (ADDP minus random init, same seed), their
    mean, sample standard deviation (None for one seed), min and max."""
    a, r = runs['addp'], runs['random']
    out = dict(seeds=[x['seed'] for x in a], addp_runs=a, random_runs=r, metrics={})
    for who, rs in (('addp', a), ('random', r)):
        for when in ('first', 'last'):
            vals = [x.get(f'train_loss_{when}') for x in rs]
            out[f'{who}_train_loss_{when}'] = (sum(vals) / len(vals)
                                               if vals and None not in vals else None)
    for k in metrics:
        paired = [x[k] - y[k] for x, y in zip(a, r)]
        n = len(paired)
        mean = sum(paired) / n
        std = (sum((d - mean)**2 for d in paired) / (n - 1))**0.5 if n > 1 else None
        out['metrics'][k] = dict(
            addp_mean=sum(x[k] for x in a) / n, random_mean=sum(y[k] for y in r) / n,
            paired_margins=paired, margin=mean, margin_std=std, min_margin=min(paired),
            max_margin=max(paired))
    return out


def transfer_summary(runs: Dict[str, List[dict]]) -> dict:
    """Means over the probe seeds and the margin (ADDP minus random init)."""
    def mean(xs: List[float]) -> float:
        return sum(xs) / len(xs)
    a, r = runs['addp'], runs['random']
    paired = [x['top1'] - y['top1'] for x, y in zip(a, r)]
    return dict(
        seeds=[x['seed'] for x in a], addp_runs=a, random_runs=r,
        addp_top1=mean([x['top1'] for x in a]), random_top1=mean([x['top1'] for x in r]),
        addp_top5=mean([x['top5'] for x in a]), random_top5=mean([x['top5'] for x in r]),
        margin=mean(paired), paired_margins=paired, min_paired_margin=min(paired))


def finish(summary: dict, wd: str, t0: float) -> dict:
    """Write summary.json and REPORT.md; print the headline numbers."""
    this_run = time.time() - t0
    resumed = summary.get('resumed')
    if resumed:
        resumed['this_run_wall_s'] = this_run
        summary['total_wall_s'] = resumed['earlier_stages_wall_s'] + this_run
    else:
        summary['total_wall_s'] = this_run
    with open(osp.join(wd, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    report = write_report(wd, summary)
    t = summary['transfer']
    print(f'\nlinear probe top-1 (mean of {len(t["seeds"])} seed(s)): ADDP {t["addp_top1"]:.2f}% vs '
          f'random init {t["random_top1"]:.2f}% (margin {t["margin"]:+.2f})')
    for task, d in summary.get('dense', {}).items():
        for k, m in d['metrics'].items():
            print(f'{task} {k} (mean of {len(d["seeds"])} seed(s)): ADDP {m["addp_mean"]:.4g} vs '
                  f'random init {m["random_mean"]:.4g} (margin {m["margin"]:+.4g}, per seed '
                  + ' / '.join(f'{x:+.4g}' for x in m['paired_margins']) + ')')
    print(f'done in {this_run / 60:.1f} min; report: {report}')
    return summary


if __name__ == '__main__':
    main()
