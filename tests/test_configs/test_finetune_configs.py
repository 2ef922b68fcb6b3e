"""Fine-tune / linear-probe configs: recipe values, layer decay, linear-probe model."""
import glob
import os.path as osp

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

CFG_DIR = osp.join(ROOT, 'configs', 'addp', 'benchmarks')
B256 = osp.join(CFG_DIR, 'vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py')
L256 = osp.join(CFG_DIR, 'vit-large-p16_addp-pre_8xb128-coslr-50e_in1k-256px.py')
B224 = osp.join(CFG_DIR, 'vit-base-p16_addp-pre_8xb128-coslr-100e_in1k.py')
L224 = osp.join(CFG_DIR, 'vit-large-p16_addp-pre_8xb128-coslr-50e_in1k.py')
LINEAR = osp.join(CFG_DIR, 'vit-base-p16_addp-pre_8xb2048-linear-coslr-90e_in1k-256px.py')
TINY_ARCH = dict(embed_dims=24, num_layers=3, num_heads=4, feedforward_channels=96)


def _tiny_model(cfg, **backbone):
    """The config's model with a tiny arch and no checkpoint."""
    from mmpretrain.registry import MODELS
    import addp_mm  # noqa: F401
    init_default_scope('mmpretrain')  # as the Runner does for these configs
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, arch=TINY_ARCH, img_size=64,
                              init_cfg=None, **backbone)
    model_cfg.head = dict(model_cfg.head, num_classes=10, in_channels=24)
    if model_cfg.get('neck'):
        model_cfg.neck = [dict(n, input_features=24) if 'input_features' in n else n
                          for n in model_cfg.neck]
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def test_all_configs_parse():
    paths = sorted(glob.glob(osp.join(CFG_DIR, '*.py')))
    assert len(paths) >= 5
    paths.append(osp.join(ROOT, 'configs', 'tests', 'vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py'))
    for p in paths:
        cfg = Config.fromfile(p)
        assert cfg.default_scope == 'mmpretrain'
        assert cfg.custom_imports['imports'] == ['addp_mm']
        assert cfg.model.backbone.type == 'ADDPVisionTransformer'


@pytest.mark.parametrize('path,lr,decay,dpr,warmup,epochs,arch,img', [
    (B256, 4e-3, 0.65, 0.1, 20, 100, 'b', 256),
    (L256, 1e-3, 0.8, 0.2, 5, 50, 'l', 256),
    (B224, 4e-3, 0.65, 0.1, 20, 100, 'b', 224),
    (L224, 1e-3, 0.8, 0.2, 5, 50, 'l', 224),
])
def test_finetune_recipe_values(path, lr, decay, dpr, warmup, epochs, arch, img):
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    assert (bb.arch, bb.img_size, bb.drop_path_rate) == (arch, img, dpr)
    assert (bb.use_tokenizer_norm, bb.final_norm, bb.out_type) == (False, False, 'avg_featmap')
    assert bb.init_cfg.type == 'Pretrained' and bb.init_cfg.checkpoint == cfg.pretrained_ckpt
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and opt.optimizer.lr == lr
    assert opt.optimizer.betas == (0.9, 0.999) and opt.optimizer.weight_decay == 0.05
    assert opt.paramwise_cfg.layer_decay_rate == decay
    assert opt.constructor == 'LearningRateDecayOptimWrapperConstructor'
    assert 'clip_grad' not in opt
    warm, cos = cfg.param_scheduler
    assert warm.type == 'LinearLR' and warm.end == warmup and cos.begin == warmup
    assert cos.end == epochs == cfg.train_cfg.max_epochs
    assert cos.eta_min_ratio * lr == pytest.approx(1e-6)
    assert cfg.train_dataloader.batch_size * 8 == 1024 == cfg.auto_scale_lr.base_batch_size
    head = cfg.model.head
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert head.init_cfg == [dict(type='TruncNormal', layer='Linear', std=2e-5)]
    assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8),
                                            dict(type='CutMix', alpha=1.0)]
    train = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResizedCrop']['scale'] == img
    assert train['RandomResizedCrop']['interpolation'] == 'bicubic'
    ra = train['RandAugment']
    assert (ra['policies'], ra['num_policies'], ra['magnitude_level'], ra['magnitude_std'],
            ra['total_level']) == ('timm_increasing', 2, 9, 0.5, 10)
    assert ra['hparams']['interpolation'] == 'bicubic'
    assert train['RandomErasing']['erase_prob'] == 0.25
    test = {t['type'].split('.')[-1]: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['ResizeEdge']['scale'] == 256 and test['ResizeEdge']['interpolation'] == 'bicubic'
    assert test['CenterCrop']['crop_size'] == img
    for dl in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert dl.dataset.type == 'ImageNet' and dl.dataset.data_root == cfg.data_root
    assert cfg.train_dataloader.dataset.ann_file == cfg.train_ann_file
    assert cfg.test_dataloader.dataset.ann_file == cfg.val_ann_file


def _mae_layer_id(timm_name: str, depth: int) -> int:
    """MAE/BEiT ``get_layer_id_for_vit`` on timm names."""
    if timm_name in ('cls_token', 'pos_embed') or timm_name.startswith('patch_embed'):
        return 0
    if timm_name.startswith('blocks.'):
        return int(timm_name.split('.')[1]) + 1
    return depth + 1


def _to_timm(name: str) -> str:
    name = name[len('backbone.'):] if name.startswith('backbone.') else name
    return name.replace('layers.', 'blocks.', 1) if name.startswith('layers.') else name


@pytest.mark.parametrize('path', [B256, L256])
def test_layer_decay_matches_mae_rule(path):
    """Per-parameter lr/wd from the config's optimizer settings vs MAE's param_groups_lrd."""
    cfg = Config.fromfile(path)
    model = _tiny_model(cfg)
    opt_cfg = cfg.optim_wrapper.copy()
    opt_cfg.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU
    opt_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, opt_cfg)
    base_lr = cfg.optim_wrapper.optimizer.lr
    decay = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    depth = TINY_ARCH['num_layers']
    groups = {g['param_name']: g for g in wrapper.optimizer.param_groups}
    assert len(groups) == sum(1 for p in model.parameters() if p.requires_grad)
    for name, group in groups.items():
        timm = _to_timm(name)
        scale = decay**(depth + 1 - _mae_layer_id(timm, depth))
        assert group['lr'] == pytest.approx(base_lr * scale, rel=1e-12), name
        no_wd = group['params'][0].ndim == 1 or timm in ('cls_token', 'pos_embed')
        assert group['weight_decay'] == (0.0 if no_wd else 0.05), name
    # the three recipe values, spelled out
    assert groups['backbone.patch_embed.projection.weight']['lr'] == pytest.approx(
        base_lr * decay**(depth + 1))
    assert groups['backbone.layers.0.attn.qkv.weight']['lr'] == pytest.approx(
        base_lr * decay**depth)
    assert groups[f'backbone.layers.{depth - 1}.ffn.layers.1.weight']['lr'] == pytest.approx(
        base_lr * decay)
    assert groups['head.fc.weight']['lr'] == pytest.approx(base_lr)
    assert groups['backbone.ln2.weight']['lr'] == pytest.approx(base_lr)  # fc_norm


def test_tokenizer_norm_gets_layer_zero():
    cfg = Config.fromfile(B256)
    model = _tiny_model(cfg, use_tokenizer_norm=True)
    assert model.get_layer_depth('backbone.pre_norm.weight') == (0, TINY_ARCH['num_layers'] + 2)
    assert model.get_layer_depth('backbone.layers.2.ln1.bias') == (3, 5)
    assert model.get_layer_depth('head.fc.bias') == (4, 5)


def test_min_lr_floor_is_per_layer():
    """Cosine ends at min_lr x lr_scale for every group (MAE's adjust_learning_rate)."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(B256)
    model = _tiny_model(cfg)
    opt_cfg = cfg.optim_wrapper.copy()
    opt_cfg.type = 'OptimWrapper'
    opt_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, opt_cfg)
    cos = dict(cfg.param_scheduler[1])
    cos.update(by_epoch=False, begin=0, end=11, T_max=10)  # step 10 = end of the cosine
    cos.pop('convert_to_iter_based')
    sched = PARAM_SCHEDULERS.build(dict(cos, optimizer=wrapper))
    for _ in range(10):
        wrapper.optimizer.step()
        sched.step()
    for g in wrapper.optimizer.param_groups:
        assert g['lr'] == pytest.approx(1e-6 * g['lr_scale'], rel=1e-6), g['param_name']


def test_linear_probe_config():
    cfg = Config.fromfile(LINEAR)
    bb = cfg.model.backbone
    assert bb.frozen_stages == 12 and bb.use_tokenizer_norm and bb.final_norm
    assert cfg.optim_wrapper.optimizer == dict(type='LARS', lr=6.4, weight_decay=0.0,
                                               momentum=0.9, eta=0.001)
    assert cfg.train_dataloader.batch_size * 8 == 16384
    assert cfg.train_cfg.max_epochs == 90 and cfg.param_scheduler[0].end == 10
    assert cfg.param_scheduler[1].eta_min == 0.0
    assert cfg.model.head.init_cfg == [dict(type='TruncNormal', layer='Linear', std=0.01)]

    model = _tiny_model(cfg, frozen_stages=3)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ['head.fc.bias', 'head.fc.weight']
    bn = model.neck[1].bn
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    model.train()
    x = torch.randn(4, 3, 64, 64)
    feats = model.extract_feat(x)[0]  # mean of normed patch tokens, then BN (batch stats)
    tokens = model.backbone(x)[0].flatten(2).mean(-1)
    expected = (tokens - tokens.mean(0)) / torch.sqrt(tokens.var(0, unbiased=False) + 1e-6)
    torch.testing.assert_close(feats, expected, atol=1e-4, rtol=1e-4)
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg.type = 'OptimWrapper'
    wrapper_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    groups = {g.get('lars_exclude', False): g for g in wrapper.optimizer.param_groups}
    assert len(wrapper.optimizer.param_groups) == 2 and set(groups) == {True, False}
    assert groups[True]['params'][0].ndim == 1  # the bias skips the trust ratio
    # one LARS step moves the head only
    from mmpretrain.structures import DataSample
    before = {k: v.clone() for k, v in model.state_dict().items()}
    samples = [DataSample().set_gt_label(i % 10) for i in range(4)]
    loss = model(x, samples, mode='loss')['loss']
    wrapper.update_params(loss)
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ['head.fc.bias', 'head.fc.weight', 'neck.1.bn.num_batches_tracked',
                       'neck.1.bn.running_mean', 'neck.1.bn.running_var']
