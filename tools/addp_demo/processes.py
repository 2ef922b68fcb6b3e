"""Running the stages as processes and reading what they logged."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .stages import ROOT, DemoError

ITER_RE = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')


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

