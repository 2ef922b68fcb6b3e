"""End to end: tiny ADDPViTDetBackbone Mask R-CNN trains via tools/train.py, evaluates box
and mask AP with CocoMetric via tools/test.py on a tiny COCO-format dataset,
DetInferencer works, and the mmdet::-inheriting drop-in config trains one iteration."""
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from helpers.detection import (REPO, coco_cfg_options, read_train_losses, run_test, run_train)

pytestmark = pytest.mark.usefixtures('one_thread')

DET_TINY = osp.join(REPO, 'configs/tests/mask-rcnn_addp-vit-tiny_simple-fpn_test_coco.py')
DROPIN = osp.join(REPO, 'configs/addp_det/mask-rcnn_addp-vit-base-p16_dropin_1x_coco.py')


@pytest.fixture(scope='module')
def trained(tiny_coco, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('det_train'))
    run_train(DET_TINY, work, coco_cfg_options(tiny_coco))
    return work


@pytest.mark.e2e
def test_train_losses_finite_and_decreasing(trained):
    logs = read_train_losses(trained)
    assert len(logs) == 4
    for rec in logs:
        for k in ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
            assert np.isfinite(rec[k]), (k, rec)
    # the R-CNN and RPN classifiers learn quickly (background prior): their losses fall
    for k in ('loss_cls', 'loss_rpn_cls'):
        assert logs[-1][k] < logs[0][k], [r[k] for r in logs]
    assert osp.isfile(osp.join(trained, 'iter_4.pth'))


@pytest.mark.e2e
def test_tools_test_coco_box_and_mask_ap(trained, tiny_coco, tmp_path):
    out = str(tmp_path / 'preds.pkl')
    metrics = run_test(DET_TINY, osp.join(trained, 'iter_4.pth'), str(tmp_path),
                       coco_cfg_options(tiny_coco), out=out)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in metrics, metrics
        assert 0.0 <= float(metrics[key]) <= 1.0  # -1 would mean "no GT/eval ran"
    if osp.isfile(out):  # tools/test.py --out (DumpDetResults)
        with open(out, 'rb') as f:
            preds = pickle.load(f)
        assert len(preds) == 2
        for p in preds:
            b = p['pred_instances']['bboxes']
            assert b.shape[1] == 4 and len(b) <= 20
            assert (b[:, 2:] <= 128 + 1e-3).all() and (b[:, :2] >= -1e-3).all()


@pytest.mark.e2e
def test_det_inferencer(trained, tiny_coco):
    from mmdet.apis import DetInferencer
    inf = DetInferencer(model=DET_TINY, weights=osp.join(trained, 'iter_4.pth'), device='cpu',
                        show_progress=False)
    img = osp.join(tiny_coco, 'val', 'val_000.jpg')
    res = inf(img, return_datasamples=True)
    ds = res['predictions'][0]
    inst = ds.pred_instances
    assert len(inst) <= 20
    assert set(inst.labels.tolist()) <= {0, 1}
    assert inst.masks.shape[-2:] == (128, 128)
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert inf.model.dataset_meta['classes'] == ('box', 'disk')


def _unscoped(x):
    """Drop the `_scope_` tags mmengine adds to configs inherited through `pkg::`."""
    if isinstance(x, dict):
        return {k: _unscoped(v) for k, v in x.items() if k != '_scope_'}
    if isinstance(x, (list, tuple)):
        return type(x)(_unscoped(v) for v in x)
    return x


def test_dropin_config_changes_only_backbone_and_neck_and_trains(tiny_coco, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(DROPIN)
    from mmengine.hub import get_config
    base = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    assert cfg.model.backbone.type == 'ADDPViTDetBackbone'
    assert cfg.model.neck.type == 'ADDPSimpleFPN'
    c, b = _unscoped(cfg.to_dict()), _unscoped(base.to_dict())
    assert set(c) - set(b) == {'custom_imports', 'pretrained'}
    for k in b:
        if k != 'model':
            assert c[k] == b[k], k
    assert set(c['model']) == set(b['model'])
    for k in b['model']:
        if k not in ('backbone', 'neck'):
            assert c['model'][k] == b['model'][k], k
    # shrink the backbone (not the mmdet heads) and the images so one CPU iteration is cheap
    cfg.model.backbone.update(arch=dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.),
                              img_size=128, pretrain_img_size=64, window_size=2)
    cfg.model.neck.backbone_channel = 32
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (128, 128)
    root = tiny_coco + '/'
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.update(
        data_root=root, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), metainfo=dict(classes=('box', 'disk')), indices=2)
    cfg.model.roi_head.bbox_head.num_classes = 2
    cfg.model.roi_head.mask_head.num_classes = 2
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=100)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss) and loss > 0
    assert isinstance(runner.model.backbone.blocks[0].attn.qkv.weight, torch.nn.Parameter)
