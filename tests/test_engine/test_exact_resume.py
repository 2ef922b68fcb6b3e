"""Exact resume and crash-safe checkpoints.

In process: the random states survive a checkpoint round trip; an mmengine
Runner resumed from iteration k (iteration- and epoch-based, with validation
in between) repeats the uninterrupted run bit for bit; a save that fails
midway keeps the previous checkpoint and pointer; an unreadable last
checkpoint falls back to the newest readable one.

End to end (``tools/train.py``): the tiny ADDP pretraining (dropout on) and the
tiny fine-tuning recipe (Mixup/CutMix, RandAugment, drop path), each with 0
and 2 dataloader workers, run N iterations uninterrupted and from the
checkpoint at k with ``--resume``: the losses, grad norms and final weights
match bit for bit; without the random-state hook they do not. The same with 2
processes (torchrun, gloo). A truncated last checkpoint is skipped with one
warning line.
"""
import glob
import json
import os
import os.path as osp
import random
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from torch import nn

import addp_mm  # noqa: F401  (registers the hooks)
from addp_mm.engine.hooks.random_state_hook import (STATE_KEY, capture_random_state,
                                                    restore_random_state)
from addp_mm.engine.resume import enable_exact_resume, pick_resume_checkpoint
from addp_mm.utils.checkpoint import CheckpointError, safe_torch_load

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
ADDP_CFG = osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_1xb8-300i_embedded-64px.py')
FT_CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py')


def _draws():
    return (random.random(), float(np.random.rand()), np.random.normal(),
            torch.rand(3).tolist())


def test_random_state_round_trip_through_a_safe_checkpoint(tmp_path):
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    state = capture_random_state()
    expected = _draws()
    path = str(tmp_path / 'state.pth')
    torch.save({STATE_KEY: state}, path)
    _draws(), _draws()
    restore_random_state(safe_torch_load(path)[STATE_KEY])  # weights_only=True
    assert _draws() == expected


# ------------------------------------------------------------ in-process runner
class _ToyAugment:
    """Augmentation from NumPy, Python's random and torch (drawn where the data is loaded)."""

    def __call__(self, results):
        x = torch.full((4, ), float(results['idx'])) + float(np.random.rand()) + random.random()
        return dict(inputs=x + torch.rand(1))


class _ToyData(torch.utils.data.Dataset):

    def __init__(self):
        self.pipeline = _ToyAugment()

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return self.pipeline(dict(idx=i))


def _toy_runner(work_dir, by_epoch, max_len, ckpt_interval, hooks=True, extra_hooks=None,
                resume_from=None, max_keep=-1, workers=0):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 1)
            self.drop = nn.Dropout(0.5)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            x = torch.stack(inputs) if isinstance(inputs, list) else inputs
            out = self.fc(self.drop(x) * torch.rand(1))
            if mode == 'loss':
                return dict(loss=out.pow(2).mean())
            return [dict(out=o) for o in out]

    from mmengine.evaluator import BaseMetric

    class _Metric(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(float(torch.rand(1)))  # validation draws from the RNG too

        def compute_metrics(self, results):
            return dict(m=float(np.mean(results)))

    loader = dict(dataset=_ToyData(), batch_size=3, num_workers=workers,
                  persistent_workers=workers > 0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=True, max_epochs=max_len, val_interval=1) if by_epoch else \
        dict(by_epoch=False, max_iters=max_len, val_interval=ckpt_interval)
    default_hooks = dict(checkpoint=dict(type='ADDPCheckpointHook', interval=ckpt_interval,
                                         by_epoch=by_epoch, max_keep_ckpts=max_keep),
                         logger=dict(type='LoggerHook', interval=1))
    if hooks:
        default_hooks['random_state'] = dict(type='ADDPRandomStateHook')
    return Runner(
        model=Toy(), work_dir=str(work_dir), experiment_name=f'toy-{uuid.uuid4().hex}',
        train_dataloader=loader, val_dataloader=loader, val_evaluator=[_Metric()],
        val_cfg=dict(), train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        default_hooks=default_hooks, custom_hooks=extra_hooks,
        randomness=dict(seed=3), default_scope='mmengine',
        resume=resume_from is not None, load_from=resume_from)


class _LossRecorder:
    """A hook that records (iteration, loss) pairs."""

    def __init__(self):
        from mmengine.hooks import Hook

        rec = self

        class H(Hook):
            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                rec.losses[runner.iter + 1] = outputs['loss'].item()

        self.losses = {}
        self.hook = H()


@pytest.mark.parametrize('by_epoch', [False, True], ids=['iter-based', 'epoch-based'])
@pytest.mark.parametrize('hooks', [True, False], ids=['hook', 'no-hook'])
def test_runner_resume_is_exact(tmp_path, by_epoch, hooks):
    """The loop replays the trained batches (iteration-based) or starts the
    next epoch; validation runs right after each checkpoint and draws random
    numbers. Without the hook the resumed losses differ."""
    # iteration-based: the replay of 5 batches crosses the end of the 4-batch epoch
    max_len, k = (3, 1) if by_epoch else (8, 5)
    full, part = _LossRecorder(), _LossRecorder()
    r = _toy_runner(tmp_path / 'a', by_epoch, max_len, 1 if by_epoch else k, hooks,
                    [full.hook])
    r.train()
    name = f'epoch_{k}.pth' if by_epoch else f'iter_{k}.pth'
    r2 = _toy_runner(tmp_path / 'b', by_epoch, max_len, 1 if by_epoch else k, hooks,
                     [part.hook], resume_from=str(tmp_path / 'a' / name))
    r2.train()
    first_after = min(part.losses)
    assert first_after > 1 and max(part.losses) == max(full.losses)
    after = {i: full.losses[i] for i in part.losses}
    final_a = safe_torch_load(str(tmp_path / 'a' / name.replace(str(k), str(max_len))))
    final_b = safe_torch_load(str(tmp_path / 'b' / name.replace(str(k), str(max_len))))
    same_weights = all(torch.equal(final_a['state_dict'][n], final_b['state_dict'][n])
                       for n in final_a['state_dict'])
    if hooks:
        assert part.losses == after
        assert same_weights
    else:
        assert part.losses != after and not same_weights


def test_epoch_based_resume_with_persistent_workers_is_exact(tmp_path):
    """Persistent workers would carry their random states from epoch to epoch
    while the resumed run starts them afresh: they are reseeded per epoch."""
    full, part = _LossRecorder(), _LossRecorder()
    for runner in (_toy_runner(tmp_path / 'a', True, 3, 1, extra_hooks=[full.hook], workers=2),
                   _toy_runner(tmp_path / 'b', True, 3, 1, extra_hooks=[part.hook], workers=2,
                               resume_from=str(tmp_path / 'a' / 'epoch_1.pth'))):
        runner.train()
        for loop in (runner.train_loop, runner.val_loop):  # stop the persistent workers now
            it = getattr(loop.dataloader, '_iterator', None)
            if it is not None:
                it._shutdown_workers()
    assert sorted(part.losses) == list(range(5, 13))
    assert part.losses == {i: full.losses[i] for i in part.losses}


def test_load_from_leaves_random_states_alone(tmp_path):
    r = _toy_runner(tmp_path / 'a', False, 2, 2)
    r.train()
    ckpt = safe_torch_load(str(tmp_path / 'a' / 'iter_2.pth'))
    assert ckpt[STATE_KEY]['world_size'] == 1 and len(ckpt[STATE_KEY]['ranks']) == 1
    from addp_mm.engine.hooks import ADDPRandomStateHook

    class FakeRunner:
        _resume = False

    hook = ADDPRandomStateHook()
    hook.after_load_checkpoint(FakeRunner(), ckpt)
    assert hook._pending is None


# ------------------------------------------------------------- crash safety
def test_interrupted_save_keeps_previous_checkpoint_and_pointer(tmp_path, monkeypatch):
    """The third save fails at fsync (a full disk): iter_2.pth and the pointer
    to it stay, nothing half-written or temporary is left. mmengine's own hook
    would already have removed iter_2.pth (max_keep_ckpts=1) before saving."""
    work = tmp_path / 'work'
    real_fsync = os.fsync

    def fsync(fd):
        if 'iter_3.pth' in os.readlink(f'/proc/self/fd/{fd}'):
            raise OSError(28, 'No space left on device')
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    r = _toy_runner(work, False, 3, 1, max_keep=1)
    with pytest.raises(OSError, match='No space left'):
        r.train()
    files = {n for n in os.listdir(work) if not osp.isdir(work / n)}
    assert files - {n for n in files if n.endswith('.py')} == {'iter_2.pth', 'last_checkpoint'}
    with open(work / 'last_checkpoint') as f:
        assert f.read() == str(work / 'iter_2.pth')
    assert safe_torch_load(str(work / 'iter_2.pth'))['meta']['iter'] == 2
    umask = os.umask(0)
    os.umask(umask)
    for name in ('iter_2.pth', 'last_checkpoint'):
        assert os.stat(work / name).st_mode & 0o777 == 0o666 & ~umask


def _runner_ckpt(path, it):
    torch.save({'meta': {'iter': it, 'epoch': 0, 'seed': 5}, 'state_dict': {}}, path)
    os.utime(path, (1_000_000 + it, 1_000_000 + it))


def test_pick_resume_checkpoint_falls_back_to_newest_readable(tmp_path):
    work = str(tmp_path)
    for it in (1, 2, 3):
        _runner_ckpt(osp.join(work, f'iter_{it}.pth'), it)
    last = osp.join(work, 'iter_3.pth')
    with open(last, 'r+b') as f:
        f.truncate(os.path.getsize(last) // 2)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(last)
    path, warning = pick_resume_checkpoint(work)
    assert path == osp.join(work, 'iter_2.pth')
    assert '\n' not in warning and 'iter_3.pth' in warning and 'iter_2.pth' in warning
    assert warning.startswith('warning: cannot resume from the last checkpoint')
    # a checkpoint hook's out_dir is searched too
    other = tmp_path.parent / f'{tmp_path.name}_out'
    other.mkdir()
    _runner_ckpt(str(other / 'iter_9.pth'), 9)
    assert pick_resume_checkpoint(work, [str(other)])[0] == str(other / 'iter_9.pth')
    # a readable last checkpoint is taken as it is; no pointer: start afresh
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'iter_1.pth'))
    assert pick_resume_checkpoint(work) == (osp.join(work, 'iter_1.pth'), None)
    assert pick_resume_checkpoint(str(tmp_path / 'nothing')) == (None, None)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(last)
    # nothing readable: one line
    for it in (1, 2):
        with open(osp.join(work, f'iter_{it}.pth'), 'wb') as f:
            f.write(b'\0' * 100)
    with pytest.raises(CheckpointError) as err:
        pick_resume_checkpoint(work)
    assert '\n' not in str(err.value) and 'iter_3.pth' in str(err.value)


def test_enable_exact_resume_covers_every_codebase():
    from mmengine.config import Config
    for cfg in (Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                                                 interval=5)))),
                Config(dict())):
        enable_exact_resume(cfg)
        assert cfg.default_hooks['checkpoint']['type'] == 'ADDPCheckpointHook'
        assert cfg.default_hooks['random_state'] == dict(type='ADDPRandomStateHook')
    assert cfg.default_hooks['checkpoint']['interval'] == 1  # mmengine's default
    off = Config(dict(default_hooks=dict(random_state=None, checkpoint=None)))
    enable_exact_resume(off)
    assert off.default_hooks == dict(checkpoint=None)
    from mmengine.registry import HOOKS, DefaultScope
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        with DefaultScope.overwrite_default_scope(scope):
            assert HOOKS.build(dict(type='ADDPRandomStateHook'))
            assert HOOKS.build(dict(type='ADDPCheckpointHook', interval=1))


# ------------------------------------------------------------------ end to end
def _train(args, cwd, check=True, script=True):
    """``python tools/train.py ARGS`` (``python ARGS`` with ``script=False``)."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable] + ([TRAIN] if script else []) + args, cwd=cwd,
                          env=env, text=True, capture_output=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
    return proc


def _scalars(work):
    """{step: {loss, grad_norm, lr, ...}} from the run's scalars.json (all runs in work)."""
    out = {}
    for path in glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                keys = {k: v for k, v in rec.items() if k not in ('time', 'data_time', 'eta')}
                out.setdefault((rec['step'], 'loss' in rec), {}).update(keys)
    return out


def _same_weights(a, b):
    sa, sb = safe_torch_load(a)['state_dict'], safe_torch_load(b)['state_dict']
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope='module')
def addp_frozen(tmp_path_factory):
    from helpers.addp import make_tiny_frozen_checkpoints
    from mmengine.config import Config
    return make_tiny_frozen_checkpoints(Config.fromfile(ADDP_CFG).model,
                                        str(tmp_path_factory.mktemp('frozen')))


ADDP_N, ADDP_K = 4, 2


def _addp_opts(frozen, workers, extra=()):
    tok, tp = frozen
    return ['--cfg-options', f'model.tokenizer.checkpoint={tok}',
            f'model.token_predictor.checkpoint={tp}', 'model.token_predictor.train_dropout=True',
            f'train_cfg.max_iters={ADDP_N}', f'default_hooks.checkpoint.interval={ADDP_K}',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            f'train_dataloader.num_workers={workers}', *extra]


@pytest.fixture(scope='module')
def addp_runs(embedded_cwd, addp_frozen, tmp_path_factory):
    """Uninterrupted ADDP runs to N (checkpoint at k), per worker count."""
    runs = {}
    for workers in (0, 2):
        work = str(tmp_path_factory.mktemp(f'addp_full_w{workers}'))
        _train([ADDP_CFG, '--work-dir', work] + _addp_opts(addp_frozen, workers), embedded_cwd)
        runs[workers] = work
    return runs


def _assert_same_tail(full, resumed, k, n, name):
    """Iterations k+1..n (and any validation) of the resumed run equal the full run's."""
    a, b = _scalars(full), _scalars(resumed)
    steps = sorted(s for s, is_train in b if is_train)
    assert steps == list(range(k + 1, n + 1)), steps
    assert all(b[s] == a[s] for s in b), {s: (a.get(s), b[s]) for s in b if a.get(s) != b[s]}
    assert 'grad_norm' in b[(n, True)] and 'loss' in b[(n, True)]
    assert _same_weights(osp.join(full, name), osp.join(resumed, name))


@pytest.mark.e2e
@pytest.mark.parametrize('workers', [0, 2])
def test_addp_pretraining_resumes_bit_for_bit(embedded_cwd, addp_frozen, addp_runs, workers,
                                              tmp_path):
    full = addp_runs[workers]
    resumed = str(tmp_path / 'resumed')
    _train([ADDP_CFG, '--work-dir', resumed, '--resume', osp.join(full, f'iter_{ADDP_K}.pth')]
           + _addp_opts(addp_frozen, workers), embedded_cwd)
    _assert_same_tail(full, resumed, ADDP_K, ADDP_N, f'iter_{ADDP_N}.pth')
    if workers:
        return
    # without the random states the resumed run draws other dropout masks and mask ratios
    plain = str(tmp_path / 'plain')
    _train([ADDP_CFG, '--work-dir', plain, '--resume', osp.join(full, f'iter_{ADDP_K}.pth')]
           + _addp_opts(addp_frozen, workers, ['default_hooks.random_state=None']), embedded_cwd)
    a, b = _scalars(full), _scalars(plain)
    assert any(b[s] != a[s] for s in b if s[1])
    assert not _same_weights(osp.join(full, f'iter_{ADDP_N}.pth'),
                             osp.join(plain, f'iter_{ADDP_N}.pth'))


@pytest.mark.e2e
def test_truncated_last_checkpoint_resumes_from_the_previous_one(embedded_cwd, addp_frozen,
                                                                 addp_runs, tmp_path):
    """A full disk truncated iter_4.pth: --resume says so in one line, resumes
    from iter_2.pth and arrives at the same iter_4.pth as the uninterrupted run."""
    work = str(tmp_path / 'work')
    shutil.copytree(addp_runs[0], work)
    last = osp.join(work, f'iter_{ADDP_N}.pth')
    with open(last, 'r+b') as f:
        f.truncate(osp.getsize(last) // 3)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(last)
    proc = _train([ADDP_CFG, '--work-dir', work, '--resume'] + _addp_opts(addp_frozen, 0),
                  embedded_cwd)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith('warning: cannot resume')]
    assert len(lines) == 1 and f'iter_{ADDP_N}.pth' in lines[0] and \
        f'iter_{ADDP_K}.pth' in lines[0], proc.stderr[-2000:]
    assert _same_weights(osp.join(addp_runs[0], f'iter_{ADDP_N}.pth'), last)
    # nothing readable left: one line, no traceback
    for name in glob.glob(osp.join(work, '*.pth')):
        with open(name, 'r+b') as f:
            f.truncate(100)
    proc = _train([ADDP_CFG, '--work-dir', work, '--resume'] + _addp_opts(addp_frozen, 0),
                  embedded_cwd, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: cannot read checkpoint')


def _write_images(root):
    rng = np.random.default_rng(0)
    from PIL import Image
    for split, n in (('train', 4), ('val', 2)):
        for label in range(4):
            folder = osp.join(root, split, f'n000{label}')
            os.makedirs(folder)
            for i in range(n):
                img = rng.integers(0, 255, (72, 88, 3), dtype=np.uint8)
                Image.fromarray(img).save(osp.join(folder, f'img_{i}.png'))


@pytest.fixture(scope='module')
def finetune_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ft')
    data_root = str(tmp / 'images')
    _write_images(data_root)
    cfg = str(tmp / 'ft_cfg.py')
    with open(cfg, 'w') as f:
        f.write(f"""_base_ = [{FT_CFG!r}]
train_dataloader = dict(dataset=dict(data_root={data_root!r}, ann_file=''))
val_dataloader = dict(dataset=dict(data_root={data_root!r}, ann_file=''))
test_dataloader = val_dataloader
optim_wrapper = dict(clip_grad=dict(max_norm=1000.0))  # logs grad_norm; never clips here
train_cfg = dict(val_interval=1)  # validation right after the checkpoint it resumes from
default_hooks = dict(checkpoint=dict(interval=1))
""")
    return cfg, str(tmp)


@pytest.mark.e2e
@pytest.mark.parametrize('workers', [0, 2])
def test_finetuning_with_mixup_cutmix_resumes_bit_for_bit(finetune_setup, workers, tmp_path):
    cfg, cwd = finetune_setup
    opts = ['--cfg-options', f'train_dataloader.num_workers={workers}']
    full, resumed = str(tmp_path / 'full'), str(tmp_path / 'resumed')
    _train([cfg, '--work-dir', full] + opts, cwd)
    _train([cfg, '--work-dir', resumed, '--resume', osp.join(full, 'epoch_1.pth')] + opts, cwd)
    _assert_same_tail(full, resumed, 4, 8, 'epoch_2.pth')
    # the full run validated after the checkpoint it was resumed from; both validated at the end
    val = [v for (_, is_train), v in _scalars(resumed).items() if not is_train]
    assert len(val) == 1 and 'accuracy/top1' in val[0]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_two_process_addp_resumes_bit_for_bit(embedded_cwd, addp_frozen, tmp_path):
    """torchrun, 2 CPU processes (gloo): each process's random states are
    gathered into the checkpoint and each takes its own back."""
    def run(work, extra=()):
        _train(['-m', 'torch.distributed.run', '--nproc_per_node=2',
                f'--master_port={_free_port()}', TRAIN, ADDP_CFG, '--work-dir', work,
                '--launcher', 'pytorch', *extra] + _addp_opts(addp_frozen, 0), embedded_cwd,
               script=False)

    full, resumed = str(tmp_path / 'full'), str(tmp_path / 'resumed')
    run(full)
    saved = safe_torch_load(osp.join(full, f'iter_{ADDP_K}.pth'))[STATE_KEY]
    assert saved['world_size'] == 2 and len(saved['ranks']) == 2
    assert not torch.equal(saved['ranks'][0]['torch'], saved['ranks'][1]['torch'])
    run(resumed, ['--resume', osp.join(full, f'iter_{ADDP_K}.pth')])
    _assert_same_tail(full, resumed, ADDP_K, ADDP_N, f'iter_{ADDP_N}.pth')
