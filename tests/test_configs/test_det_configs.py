"""The full-size detection configs hold the assumed ViTDet protocol values."""
import os.path as osp

import pytest
from helpers.detection import REPO
from mmengine.config import Config

pytestmark = pytest.mark.usefixtures('one_thread')

CFG = osp.join(REPO, 'configs/addp_det/mask-rcnn_addp-vit-{}-p16_simple-fpn_lsj-100e_coco.py')


@pytest.mark.parametrize('size,decay,dpr,glob,ch', [
    ('base', 0.7, 0.1, (2, 5, 8, 11), 768), ('large', 0.8, 0.4, (5, 11, 17, 23), 1024)])
def test_vitdet_protocol_values(size, decay, dpr, glob, ch):
    cfg = Config.fromfile(CFG.format(size))
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports.imports == ['addp_mm']
    bb = cfg.model.backbone
    assert bb.type == 'ADDPViTDetBackbone' and bb.arch == size[0]
    assert tuple(bb.global_attn_indexes) == glob and bb.drop_path_rate == dpr
    assert bb.window_size == 14 and bb.use_rel_pos and tuple(bb.img_size) == (1024, 1024)
    assert cfg.model.neck.type == 'ADDPSimpleFPN' and cfg.model.neck.backbone_channel == ch
    ow = cfg.optim_wrapper
    assert ow.constructor == 'ADDPLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.layer_decay_rate == decay
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == 1e-4
    assert cfg.train_cfg.max_iters == 184375  # 100 epochs at batch 64
    assert cfg.train_dataloader.batch_size * 16 == 64
    resize = [t for t in cfg.train_pipeline if t['type'] == 'RandomResize'][0]
    assert tuple(resize['scale']) == (1024, 1024) and tuple(resize['ratio_range']) == (0.1, 2.0)
    assert 'ASSUMPTION' in open(CFG.format(size)).read()


def test_full_base_detector_builds_with_layer_decay():
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    cfg = Config.fromfile(CFG.format('base'))
    cfg.model.backbone.pretrained = None
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert model.backbone.num_layers == 12
    cfg.optim_wrapper.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = {g['param_name']: g['lr'] for g in ow.optimizer.param_groups}
    assert lr['backbone.patch_embed.proj.weight'] == pytest.approx(1e-4 * 0.7 ** 13)
    assert lr['backbone.blocks.0.attn.qkv.weight'] == pytest.approx(1e-4 * 0.7 ** 12)
    assert lr['backbone.blocks.11.attn.rel_pos_h'] == pytest.approx(1e-4 * 0.7)
    assert lr['neck.fpn_convs.3.0.weight'] == pytest.approx(1e-4)


def test_real_base_checkpoint_keys_all_accounted():
    """The official ViT-B pretraining key list (tests/data/checkpoint_keys) loads into
    ADDPViTDetBackbone-B: encoder keys are used or documented-unused, the rest skipped."""
    import torch
    from addp_mm.models.backbones import ADDPViTDetBackbone
    sd = {}
    with open(osp.join(REPO, 'tests/data/checkpoint_keys/addp_vit_base_patch16.txt')) as f:
        for line in f:
            key, shape, _ = line.split()
            dims = [int(d) for d in shape.strip('[]').split(',') if d]
            sd[key] = torch.zeros(dims) if key.startswith(('blocks.', 'patch_embed', 'pos_embed',
                                                           'cls_token', 'norm.', 'tokenizer_norm'))\
                else torch.zeros(1)
    m = ADDPViTDetBackbone(arch='b', img_size=1024)
    rep = m.load_encoder_state_dict(sd, 'addp_vit_base_patch16')
    assert len(rep['loaded']) == 12 * 12 + 2 + 1  # blocks, patch_embed.proj.{w,b}, pos_embed
    assert {k for k, _ in rep['ignored']} == {'cls_token', 'norm.weight', 'norm.bias',
                                              'tokenizer_norm.weight', 'tokenizer_norm.bias'}
    assert set(rep['fresh']) == {f'blocks.{i}.attn.rel_pos_{a}' for i in range(12)
                                 for a in 'hw'}
    # the other parts of the release (decoder, tokenizer, predictor) are counted
    assert sum(rep['not_encoder'].values()) + len(rep['loaded']) + len(rep['ignored']) == len(sd)
