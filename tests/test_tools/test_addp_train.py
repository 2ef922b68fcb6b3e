"""Tiny ADDP trained through tools/train.py: learning, --resume auto, and a
2-process CPU run (torchrun, --launcher pytorch)."""
import glob
import math
import os
import os.path as osp
import re
import socket

import numpy as np
import pytest
import torch
from helpers.addp import ROOT, TINY_CFG, make_tiny_frozen_checkpoints
from helpers.checkout import run_tool
from mmengine.config import Config
from PIL import Image

pytestmark = pytest.mark.e2e

TRAIN = osp.join(ROOT, 'tools', 'train.py')


@pytest.fixture(scope='module')
def frozen(tmp_path_factory):
    cfg = Config.fromfile(TINY_CFG)
    return make_tiny_frozen_checkpoints(cfg.model, str(tmp_path_factory.mktemp('tiny_frozen')))


def _opts(frozen, iters, ckpt_interval, extra=()):
    tok, tp = frozen
    return ['--cfg-options', f'model.tokenizer.checkpoint={tok}',
            f'model.token_predictor.checkpoint={tp}', f'train_cfg.max_iters={iters}',
            f'default_hooks.checkpoint.interval={ckpt_interval}', *extra]


def _load_runner_ckpt(path):
    from addp_mm.utils.checkpoint import load_external_state_dict
    return load_external_state_dict(path, keys=('state_dict', ))


def _fixed_batch(cwd, n=8):
    files = sorted(glob.glob(osp.join(cwd, 'data', 'embedded_photos', 'train', '*', '*.png')))
    files = files[::max(1, len(files) // n)][:n]
    imgs = [torch.from_numpy(np.array(Image.open(f).convert('RGB'))).permute(2, 0, 1) for f in files]
    return torch.stack(imgs).float() / 255


def _fixed_batch_loss(model, images, n_masks=4):
    model.eval()
    losses = []
    with torch.no_grad():
        for s in range(n_masks):
            m_t, m_n = model.mask_generator(images.shape[0], model.num_tokens,
                                            generator=torch.Generator().manual_seed(100 + s))
            losses.append(model.forward_train_step(images, m_t, m_n)['loss'].item())
    return float(np.mean(losses))


HALF, FULL = 75, 150


@pytest.fixture(scope='module')
def trained(embedded_cwd, frozen, tmp_path_factory):
    """tools/train.py to HALF iterations (the "interruption"), then rerun with
    ``--resume auto`` to FULL. Used by the learning and the resume tests."""
    work = str(tmp_path_factory.mktemp('addp_train') / 'work')
    first = run_tool([TRAIN, TINY_CFG, '--work-dir', work] + _opts(frozen, HALF, HALF),
                     cwd=embedded_cwd, timeout=900)
    half = torch.load(osp.join(work, f'iter_{HALF}.pth'), map_location='cpu', weights_only=False)
    second = run_tool([TRAIN, TINY_CFG, '--work-dir', work, '--resume', 'auto'] +
                      _opts(frozen, FULL, HALF), cwd=embedded_cwd, timeout=900)
    return dict(work=work, half=half, first=first.stdout + first.stderr,
                second=second.stdout + second.stderr)


def test_learning_via_train_py(embedded_cwd, frozen, trained):
    """The loss on a fixed batch of real photos falls well below its start."""
    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    ckpt = osp.join(trained['work'], f'iter_{FULL}.pth')
    cfg = Config.fromfile(TINY_CFG)
    cfg.model.tokenizer.checkpoint, cfg.model.token_predictor.checkpoint = frozen
    images = _fixed_batch(embedded_cwd)
    torch.manual_seed(0)
    start = MODELS.build(cfg.model)
    start.init_weights()
    loss0 = _fixed_batch_loss(start, images)
    trained_model = MODELS.build(cfg.model)
    trained_model.init_weights()
    sd = _load_runner_ckpt(ckpt)
    trained_model.load_state_dict(sd, strict=True)
    loss1 = _fixed_batch_loss(trained_model, images)
    # the frozen parts are untouched by training
    for k, v in start.state_dict().items():
        if k.startswith(('tokenizer.', 'token_predictor.')):
            assert torch.equal(v, sd[k]), k
    print(f'fixed-batch loss: start {loss0:.4f} -> after {FULL} iters {loss1:.4f}')
    assert loss0 > 3.5  # ~log(75) at initialisation
    assert loss1 < loss0 - 0.5, (loss0, loss1)

    # the visualisation hook wrote x_0 / x_t / prediction images (local + TensorBoard)
    work = trained['work']
    pngs = glob.glob(osp.join(work, '*', 'vis_data', 'vis_image', 'addp_sample0_100.png'))
    assert pngs, os.listdir(work)
    img = np.asarray(Image.open(pngs[0]))
    assert img.shape == (64, 5 * 64, 3) and img.std() > 1
    assert glob.glob(osp.join(work, '*', 'vis_data', 'events.out.tfevents.*'))


def test_resume_auto_continues_the_schedule(trained):
    half = trained['half']
    assert half['meta']['iter'] == HALF
    out = trained['second']
    assert 'resumed' in out.lower() or 'Load checkpoint from' in out
    # the second run's log starts after the interruption
    it = lambda i, n: re.compile(rf'Iter\(train\) \[\s*{i}/{n}\]')  # noqa: E731
    assert it(80, FULL).search(out) and not it(10, FULL).search(out)
    assert it(10, HALF).search(trained['first'])
    final = torch.load(osp.join(trained['work'], f'iter_{FULL}.pth'), map_location='cpu',
                       weights_only=False)
    assert final['meta']['iter'] == FULL
    # optimizer state continued: AdamW took FULL steps in total, not FULL - HALF
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {FULL}
    # the LR schedule continued: cosine after a 20-iteration warm-up, ending at 300
    cfg = Config.fromfile(TINY_CFG)
    base = cfg.optim_wrapper.optimizer.lr
    cos = cfg.param_scheduler[1]

    def expected(it):
        return base * (1 + math.cos(math.pi * (it - cos.begin) / cos.T_max)) / 2

    assert half['optimizer']['param_groups'][0]['lr'] == pytest.approx(expected(HALF), rel=1e-4)
    assert final['optimizer']['param_groups'][0]['lr'] == pytest.approx(expected(FULL), rel=1e-4)
    assert not torch.equal(half['state_dict']['backbone.pos_embed'],
                           final['state_dict']['backbone.pos_embed'])


def _free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_two_process_cpu_training(embedded_cwd, frozen, tmp_path):
    work = str(tmp_path / 'work')
    args = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
            TRAIN, TINY_CFG, '--work-dir', work, '--launcher', 'pytorch'] + _opts(
                frozen, 3, 3, ['default_hooks.logger.interval=1'])
    proc = run_tool(args, cwd=embedded_cwd, timeout=600)
    out = proc.stdout + proc.stderr
    ckpt = torch.load(osp.join(work, 'iter_3.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 3
    # both ranks trained; DDP ran with find_unused_parameters=False (the default),
    # which would fail from the 2nd iteration on if a trainable parameter got no gradient
    assert 'find_unused_parameters=True' not in out
    logs = glob.glob(osp.join(work, '*', '*.log'))
    text = ''.join(open(f).read() for f in logs)
    assert 'Distributed training: True' in text and 'GPU number: 2' in text, text[:3000]
    assert 'Iter(train) [3/3]' in text
