"""ADDPLayerDecayOptimWrapperConstructor on a detector (lrs and weight decays
against the BEiT/MAE/ViTDet rule), registration, errors."""
import os.path as osp

import pytest
import torch
from helpers.detection import REPO
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from addp_mm.engine.optimizers import ADDPLayerDecayOptimWrapperConstructor

pytestmark = pytest.mark.usefixtures('one_thread')

DET_TINY = osp.join(REPO, 'configs/tests/mask-rcnn_addp-vit-tiny_simple-fpn_test_coco.py')


def _groups(model, optim_cfg):
    ow = build_optim_wrapper(model, optim_cfg)
    by_param = {}
    for g in ow.optimizer.param_groups:
        by_param[g['param_name']] = g
    return by_param


def test_detector_layer_decay_rule():
    cfg = Config.fromfile(DET_TINY)
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    depth = model.backbone.num_layers  # 2
    base_lr, decay = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    assert decay == 0.7
    g = _groups(model, cfg.optim_wrapper)

    def lr(name):
        return g[name]['lr']

    # lr = base * decay ** (depth + 1 - layer_id)
    assert lr('backbone.patch_embed.proj.weight') == pytest.approx(base_lr * decay ** (depth + 1))
    assert lr('backbone.pos_embed') == pytest.approx(base_lr * decay ** (depth + 1))
    assert lr('backbone.blocks.0.attn.qkv.weight') == pytest.approx(base_lr * decay ** depth)
    assert lr(f'backbone.blocks.{depth - 1}.mlp.fc2.weight') == pytest.approx(base_lr * decay)
    assert lr('neck.lateral_convs.0.0.weight') == pytest.approx(base_lr)
    assert lr('roi_head.bbox_head.fc_cls.weight') == pytest.approx(base_lr)
    assert lr('rpn_head.rpn_cls.weight') == pytest.approx(base_lr)
    # weight decay: norms (incl. LN2d) and pos_embed get none, the rest 0.1
    wd = cfg.optim_wrapper.optimizer.weight_decay
    assert g['backbone.pos_embed']['weight_decay'] == 0.
    assert g['backbone.blocks.0.norm1.weight']['weight_decay'] == 0.
    assert g['neck.lateral_convs.0.1.weight']['weight_decay'] == 0.
    assert g['backbone.blocks.0.attn.qkv.weight']['weight_decay'] == wd
    assert g['backbone.blocks.0.attn.qkv.bias']['weight_decay'] == wd
    # every trainable parameter is in exactly one group
    assert set(g) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_frozen_params_skipped_and_num_layers_checked():
    from addp_mm.models.backbones import ADDPViTDetBackbone

    class Det(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ADDPViTDetBackbone(arch=dict(embed_dims=16, num_layers=3, num_heads=2),
                                               img_size=64, pretrain_img_size=64, window_size=2)
            self.head = torch.nn.Linear(16, 2)

    m = Det()
    m.backbone.patch_embed.requires_grad_(False)
    cfg = dict(optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
               constructor='ADDPLayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(layer_decay_rate=0.5))
    g = _groups(m, cfg)
    assert 'backbone.patch_embed.proj.weight' not in g
    assert g['backbone.blocks.2.attn.proj.weight']['lr'] == pytest.approx(0.5)
    assert g['backbone.pos_embed']['lr'] == pytest.approx(0.5 ** 4)
    assert g['head.weight']['lr'] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r'num_layers=12 but the backbone has 3 blocks'):
        _groups(m, dict(cfg, paramwise_cfg=dict(layer_decay_rate=0.5, num_layers=12)))
    with pytest.raises(NotImplementedError, match='get_layer_depth'):
        _groups(torch.nn.Sequential(torch.nn.Linear(2, 2)), cfg)


def test_registered_in_all_three_codebases():
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET
    from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS as PRE
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG
    for reg in (DET, SEG, PRE):
        assert reg.get('ADDPLayerDecayOptimWrapperConstructor') is \
            ADDPLayerDecayOptimWrapperConstructor
