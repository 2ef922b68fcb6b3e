"""End to end: tiny ADDP ViT UperNet trains via tools/train.py and evaluates
mIoU with sliding-window inference via tools/test.py on a tiny ADE20k-format
dataset; MMSegInferencer works; SyncBN configs run on one CPU process as BN."""
import os.path as osp

import numpy as np
import pytest
from helpers.segmentation import REPO, ade_cfg_options, read_train_losses, run_test, run_train

pytestmark = pytest.mark.usefixtures('one_thread')

SEG_TINY = osp.join(REPO, 'configs/tests/upernet_addp-vit-tiny_test_ade20k-64x64.py')
SEG_B = osp.join(REPO, 'configs/addp_seg/upernet_addp-vit-base-p16_8xb2-amp-160k_ade20k-512x512.py')


@pytest.fixture(scope='module')
def trained(tiny_ade, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('seg_train'))
    run_train(SEG_TINY, work, ade_cfg_options(tiny_ade))
    return work


@pytest.mark.e2e
def test_train_losses_finite_and_decreasing(trained):
    logs = read_train_losses(trained)
    assert len(logs) == 4
    for rec in logs:
        assert np.isfinite(rec['decode.loss_ce']) and np.isfinite(rec['aux.loss_ce'])
    assert logs[-1]['loss'] < logs[0]['loss'], [r['loss'] for r in logs]
    assert osp.isfile(osp.join(trained, 'iter_4.pth'))


@pytest.mark.e2e
def test_tools_test_miou_sliding_window(trained, tiny_ade, tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(SEG_TINY)
    assert cfg.model.test_cfg.mode == 'slide'
    metrics = run_test(SEG_TINY, osp.join(trained, 'iter_4.pth'), str(tmp_path),
                       ade_cfg_options(tiny_ade))
    for key in ('mIoU', 'aAcc', 'mAcc'):
        assert key in metrics, metrics
        assert 0.0 <= float(metrics[key]) <= 100.0


@pytest.mark.e2e
def test_mmseg_inferencer(trained, tiny_ade):
    from mmseg.apis import MMSegInferencer
    inf = MMSegInferencer(model=SEG_TINY, weights=osp.join(trained, 'iter_4.pth'), device='cpu')
    img = osp.join(tiny_ade, 'images', 'validation', 'ADE_validation_00000000.jpg')
    res = inf(img, return_datasamples=True)
    pred = res.pred_sem_seg.data
    assert pred.shape == (1, 96, 128)
    assert int(pred.min()) >= 0 and int(pred.max()) < 150


def test_full_size_configs_and_syncbn_reverts_when_not_distributed(tmp_path):
    from mmengine.config import Config
    for name, decay, idx in (('base', 0.65, (3, 5, 7, 11)),
                             ('large', 0.95, (7, 11, 15, 23))):
        cfg = Config.fromfile(SEG_B.replace('base', name))
        assert cfg.model.backbone.type == 'ADDPVisionTransformer'
        assert cfg.model.backbone.arch == name[0]
        assert tuple(cfg.model.backbone.out_indices) == idx
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == decay
        assert cfg.optim_wrapper.optimizer.lr == 1e-4
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.model.neck.type == 'Feature2Pyramid' and cfg.model.neck.rescales == [4, 2, 1, 0.5]
        assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.auxiliary_head.type == 'FCNHead'
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    # single process (CPU / one GPU): the Runner reverts SyncBN to BN automatically
    import torch
    from mmengine.runner import Runner
    cfg = Config.fromfile(SEG_B)
    cfg.model.backbone.update(arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                                        feedforward_channels=64), img_size=64,
                              out_indices=(0, 1, 2, 3), pretrained=None)
    cfg.model.neck.embed_dim = 32
    cfg.model.decode_head.update(in_channels=[32] * 4, channels=16)
    cfg.model.auxiliary_head.update(in_channels=32, channels=16)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    bns = [m for m in runner.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    # and the reverted model trains in one process without a process group
    runner.model.train()
    x = torch.randn(2, 3, 64, 64)
    feats = runner.model.extract_feat(x)
    assert runner.model.decode_head(feats).shape == (2, 150, 16, 16)
