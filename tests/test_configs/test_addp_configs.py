"""The official-recipe configs: values of the recipe (reference
``configs/release/*/pretrain_*.sh``) and the data
pipeline in both ImageNet layouts (class folders / meta-list file)."""
import os.path as osp

import pytest
import torch
from helpers.addp import BASE_CFG, LARGE_CFG, TINY_CFG
from mmengine.config import Config

import addp_mm  # noqa: F401
from mmpretrain.registry import DATASETS, MODELS


@pytest.mark.parametrize('path,epochs,dims,tp_dims,tp_depth', [
    (BASE_CFG, 1600, 768, 768, 12), (LARGE_CFG, 800, 1024, 1024, 24)])
def test_official_recipe_values(path, epochs, dims, tp_dims, tp_depth):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports == ['addp_mm'] and cfg.default_scope == 'mmpretrain'
    m = cfg.model
    assert m.backbone.img_size == 256 and m.backbone.patch_size == 16
    assert m.backbone.embed_dims == dims and m.neck.embed_dims == dims and m.neck.num_layers == 8
    assert m.neck.num_heads == 16
    assert (m.backbone.drop_rate, m.backbone.attn_drop_rate, m.backbone.tokenizer_drop_rate) == (0.1,) * 3
    assert m.token_predictor.embed_dims == tp_dims and m.token_predictor.depth == tp_depth
    assert m.token_predictor.train_dropout is True  # the release behaviour
    assert m.token_predictor.checkpoint.endswith(f'mage-vit{"b" if dims == 768 else "l"}-1600.pth')
    assert m.tokenizer.checkpoint.endswith('vqgan_jax_strongaug.ckpt')
    assert m.data_preprocessor.mean == [0., 0., 0.] and m.data_preprocessor.std == [255.] * 3
    # ADDP's soft-target loss: mmpretrain's LabelSmoothLoss
    assert m.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    ms = m.mask_generator
    assert (ms.ratio_min, ms.ratio_max, ms.ratio_mu, ms.ratio_std, ms.max_offset) == \
        (0.5, 1.0, 0.55, 0.25, 5)
    ow = cfg.optim_wrapper
    assert ow.type == 'ADDPAmpOptimWrapper' and ow.dtype == 'auto' and ow.clip_grad.max_norm == 3.0
    # the fast path is the default: device-dependent switches, cuDNN autotuning
    assert m.performance == 'auto' and cfg.env_cfg.cudnn_benchmark is True
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == 1.6e-3
    assert tuple(ow.optimizer.betas) == (0.9, 0.95) and ow.optimizer.weight_decay == 0.05
    # 32 GPUs x 128 = 4096, the batch the lr is given for
    assert 32 * cfg.train_dataloader.batch_size == cfg.auto_scale_lr.base_batch_size == 4096
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == 40 and warm.convert_to_iter_based
    assert cos.type == 'CosineAnnealingLR' and (cos.begin, cos.end) == (40, epochs)
    assert cos.T_max == epochs - 40 and cos.eta_min == 0 and cos.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == epochs
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert crop.type == 'RandomResizedCrop' and crop.scale == 256
    assert tuple(crop.crop_ratio_range) == (0.2, 1.0) and crop.interpolation == 'bicubic'
    types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert types == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert any(h.type == 'ADDPVisualizationHook' for h in cfg.custom_hooks)
    assert [b.type for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']


@pytest.mark.parametrize('layout', ['folder', 'meta_list'])
def test_imagenet_layouts_feed_the_model(embedded_cwd, layout):
    """The B config's dataset section reads a class-folder tree or a meta list;
    the preprocessor then gives RGB in [0,1] at 256 px (no normalisation)."""
    cfg = Config.fromfile(BASE_CFG)
    ds_cfg = cfg.train_dataloader.dataset
    root = osp.join(embedded_cwd, 'data', 'embedded_photos')
    ds_cfg.data_root = root
    if layout == 'folder':
        ds_cfg.data_prefix, ds_cfg.ann_file = 'train', ''
    else:  # lines "train/<photo>/<file> <label>" relative to data_root
        ds_cfg.data_prefix, ds_cfg.ann_file = '', 'meta/train.txt'
    ds = DATASETS.build(ds_cfg)
    assert len(ds) == 14 * 24
    item = ds[0]
    assert item['inputs'].shape == (3, 256, 256) and item['inputs'].dtype == torch.uint8
    pre = MODELS.build(cfg.model.data_preprocessor)
    out = pre(dict(inputs=torch.stack([item['inputs']]), data_samples=None), True)
    x = out['inputs']
    assert x.shape == (1, 3, 256, 256) and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(x[0], item['inputs'].flip(0).float() / 255)  # BGR -> RGB


def test_tiny_config_matches_its_name():
    cfg = Config.fromfile(TINY_CFG)
    assert cfg.train_cfg.max_iters == 300 and cfg.train_dataloader.batch_size == 8
    m = cfg.model
    f = 2**(len(m.tokenizer.ch_mult) - 1)
    assert m.backbone.img_size == 64 and m.backbone.patch_size == f == 8
    assert m.token_predictor.num_tokens == (64 // 8)**2
