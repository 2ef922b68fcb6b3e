"""The online kNN monitor: the weighted-kNN math on known features, a tiny
pretraining run that logs ``knn/top1``, a two-process run with the value of
one process, and a run with the hook giving bit-for-bit the losses and weights
of a run without it."""
import copy
import glob
import json
import os
import os.path as osp
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers.addp import TINY_CFG, make_tiny_frozen_checkpoints
from mmengine.config import Config

import addp_mm  # noqa: F401
from addp_mm.engine.hooks.knn_monitor_hook import (ADDPKNNMonitorHook, rng_preserved,
                                                   weighted_knn_accuracy)

torch.set_num_threads(1)


# ------------------------------------------------------------------ kNN math
def test_weighted_knn_on_hand_made_clusters():
    # three well separated directions; memory: 4 samples per class near them
    centers = torch.eye(3, 8)
    g = torch.Generator().manual_seed(0)
    train = centers.repeat_interleave(4, 0) + 0.05 * torch.randn(12, 8, generator=g)
    train_labels = torch.arange(3).repeat_interleave(4)
    val = torch.cat([centers, centers[:1]]) * 7.0  # scale must not matter (L2-normalised)
    val_labels = torch.tensor([0, 1, 2, 1])  # the last query sits in class 0's cluster
    acc = weighted_knn_accuracy(train, train_labels, val, val_labels, k=4, temperature=0.07)
    assert acc[1] == pytest.approx(75.0)  # 3 of 4 right
    assert acc[5] == pytest.approx(100.0)  # 3 classes: every label is in the top 5

    # exp(sim / T) weighting: 1 very close neighbour outvotes 2 farther ones
    mem = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    q = torch.tensor([[0.95, 0.31]])
    labels = torch.tensor([0, 1, 1])
    sim = F.normalize(q, dim=1) @ F.normalize(mem, dim=1).T
    w = (sim / 0.07).exp()[0]
    assert w[0] > w[1] + w[2]  # the case is what we claim
    assert weighted_knn_accuracy(mem, labels, q, torch.tensor([0]), k=3, topk=(1, ))[1] == 100.0
    # a high temperature makes the votes nearly equal: the majority (class 1) wins
    assert weighted_knn_accuracy(mem, labels, q, torch.tensor([0]), k=3, temperature=100.,
                                 topk=(1, ))[1] == 0.0
    # k=1 is nearest neighbour; k larger than the memory is clipped
    assert weighted_knn_accuracy(mem, labels, q, torch.tensor([0]), k=1, topk=(1, ))[1] == 100.0
    assert weighted_knn_accuracy(mem, labels, q, torch.tensor([0]), k=50,
                                 temperature=100., topk=(1, ))[1] == 0.0
    # chunking the queries changes nothing
    big_q = torch.randn(50, 8, generator=g)
    big_l = torch.randint(0, 3, (50, ), generator=g)
    a = weighted_knn_accuracy(train, train_labels, big_q, big_l, k=5)
    b = weighted_knn_accuracy(train, train_labels, big_q, big_l, k=5, chunk_size=7)
    assert a == b


def test_hook_arguments_are_checked():
    loader = dict(dataset=dict(type='X'))
    with pytest.raises(ValueError, match='must not shuffle'):
        ADDPKNNMonitorHook(dict(loader, sampler=dict(type='DefaultSampler', shuffle=True)),
                           loader)
    with pytest.raises(ValueError, match='must not shuffle'):
        ADDPKNNMonitorHook(loader, dict(loader, sampler=dict(type='InfiniteSampler')))
    with pytest.raises(ValueError, match='temperature'):
        ADDPKNNMonitorHook(loader, loader, temperature=0)
    hook = ADDPKNNMonitorHook(loader, loader)
    assert hook.k == 20 and hook.temperature == 0.07 and hook.topk == (1, 5)
    assert hook.loader_cfgs['train']['sampler'] == dict(type='DefaultSampler', shuffle=False)


def test_rng_preserved_restores_every_stream():
    import random

    import numpy as np
    before = (random.random(), np.random.rand(), torch.rand(1))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    ref = (random.random(), np.random.rand(), float(torch.rand(1)))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    with rng_preserved():
        random.random(), np.random.rand(3), torch.rand(5)
    assert (random.random(), np.random.rand(), float(torch.rand(1))) == ref
    assert before is not None


# ------------------------------------------------- features, one vs two procs
def _tiny_photos(root: str) -> dict:
    """Loader configs over 16 px embedded photos; odd sizes so a 2-rank sampler pads."""
    from addp_mm.datasets import build_embedded_photos
    build_embedded_photos(root, crop_size=16, num_train=5, num_val=3)
    ds = dict(type='ADDPEmbeddedPhotos', data_root=root, crop_size=16, num_train=5, num_val=3,
              pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    return dict(train_dataloader=dict(batch_size=8, dataset=dict(ds, split='train', indices=69)),
                val_dataloader=dict(batch_size=8, dataset=dict(ds, split='val', indices=41)))


def _knn_values(loaders: dict, rank_file: str = None) -> dict:
    from helpers.performance import build_tiny_addp
    from mmengine.runner import Runner
    model = build_tiny_addp(seed=3)
    model.train()
    hook = ADDPKNNMonitorHook(**loaders, k=5)
    runner = SimpleNamespace(model=model, seed=0, build_dataloader=Runner.build_dataloader)
    values = hook.compute(runner)
    assert model.training and model.backbone.training and not model.tokenizer.training
    values['sizes'] = list(hook._sizes)
    if rank_file:
        with open(rank_file, 'w') as f:
            json.dump(values, f)
    return values


def test_cached_batches_give_the_same_values(tmp_path):
    from helpers.performance import build_tiny_addp
    from mmengine.runner import Runner
    loaders = _tiny_photos(str(tmp_path / 'photos16'))
    model = build_tiny_addp(seed=3)
    runner = SimpleNamespace(model=model, seed=0, build_dataloader=Runner.build_dataloader)
    plain = ADDPKNNMonitorHook(**loaders, k=5).compute(runner)
    cached = ADDPKNNMonitorHook(**loaders, k=5, cache_data=True)
    first = cached.compute(runner)
    cached._loaders = None  # a second evaluation reads no image and builds no loader

    def no_loader(*args, **kwargs):
        raise AssertionError('the cached batches must be used')
    second = cached.compute(SimpleNamespace(model=model, seed=0, build_dataloader=no_loader))
    assert len(cached._cache['train']) == 9  # 69 samples in batches of 8
    for values in (first, second):
        assert values['knn/top1'] == plain['knn/top1'] and values['knn/top5'] == plain['knn/top5']


def _worker(rank: int, world: int, port: int, loaders: dict, out_dir: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        from mmengine.registry import DefaultScope
        DefaultScope.get_instance(f'knn-{rank}', scope_name='mmpretrain')
        _knn_values(loaders, osp.join(out_dir, f'rank{rank}.json'))
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e
def test_two_processes_give_the_one_process_value(tmp_path):
    import torch.multiprocessing as mp
    loaders = _tiny_photos(str(tmp_path / 'photos16'))
    single = _knn_values(loaders)
    assert single['sizes'] == [69, 41]
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, loaders, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.json') as f:
            got = json.load(f)
        assert got['sizes'] == [69, 41]  # padding repeats removed
        assert got['knn/top1'] == single['knn/top1'] and got['knn/top5'] == single['knn/top5']


# ------------------------------------------------------------- runner runs
@pytest.fixture(scope='module')
def frozen(tmp_path_factory):
    cfg = Config.fromfile(TINY_CFG)
    return make_tiny_frozen_checkpoints(cfg.model, str(tmp_path_factory.mktemp('knn_frozen')))


def _run(work_dir: str, frozen, knn: bool, iters: int = 6):
    from mmengine.runner import Runner
    cfg = Config.fromfile(TINY_CFG)
    cfg.model.tokenizer.checkpoint, cfg.model.token_predictor.checkpoint = frozen
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = iters
    cfg.train_dataloader.batch_size = 4
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=iters, by_epoch=False)
    cfg.log_processor = dict(window_size=1, by_epoch=False)
    cfg.custom_hooks = []
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    if knn:
        test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
        ds = dict(type='ADDPEmbeddedPhotos', data_root='data/embedded_photos', crop_size=64,
                  pipeline=test_pipeline)
        cfg.custom_hooks = [dict(
            type='ADDPKNNMonitorHook', interval=4, k=5, eval_at_start=True,
            train_dataloader=dict(batch_size=32, dataset=dict(ds, split='train', indices=56)),
            val_dataloader=dict(batch_size=32, dataset=dict(ds, split='val', indices=28)))]
    runner = Runner.from_cfg(cfg)
    runner.train()
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json'))
    records = [json.loads(line) for p in logs if not p.endswith('scalars.json')
               for line in open(p) if line.strip()]
    return runner, records


def test_tiny_pretraining_logs_knn_and_keeps_the_losses(embedded_cwd, frozen, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(embedded_cwd)
    with_hook, rec_knn = _run(str(tmp_path / 'knn'), frozen, knn=True)
    without, rec_plain = _run(str(tmp_path / 'plain'), frozen, knn=False)

    # knn/top1 before training (0), at iteration 4 and at the end (6), in the json log
    knn = [r for r in rec_knn if 'knn/top1' in r]
    assert [r['step'] for r in knn] == [0, 4, 6]
    for r in knn:
        assert 0.0 <= r['knn/top1'] <= r['knn/top5'] <= 100.0 and r['knn/time'] > 0
    assert knn[0]['knn/top1'] > 100 / 14  # better than chance on 14 photos (even random init)
    hub = with_hook.message_hub
    assert hub.get_scalar('knn/top1').current() == knn[-1]['knn/top1']
    logs = open(glob.glob(osp.join(str(tmp_path / 'knn'), '*', '*.log'))[0]).read()
    assert 'kNN monitor (k=5, T=0.07) at iter 4: top1:' in logs

    # RNG-neutral: the same loss at every iteration and the same final weights, bit for bit
    loss = lambda recs: [(r['step'], r['loss']) for r in recs if 'loss' in r]  # noqa: E731
    assert len(loss(rec_plain)) == 6 and loss(rec_knn) == loss(rec_plain)
    sd_a, sd_b = with_hook.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_b)
    assert with_hook.model.training and with_hook.model.backbone.training
