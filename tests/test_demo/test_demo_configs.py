"""The demo configs fit together, and the checkpoints of the two new training
algorithms load through the ADDP config's loading path (and ADDP's through
the transfer/dense backbones)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import addp_mm  # noqa: F401

from helpers.checkout import REPO_ROOT as REPO
DEMO = osp.join(REPO, 'configs', 'demo')


def cfg(name: str) -> Config:
    (path, ) = glob.glob(osp.join(DEMO, name + '*.py'))
    return Config.fromfile(path)


def _no_ckpt(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ('checkpoint', 'train_dropout')}


def test_demo_configs_share_architectures():
    vq, mage, addp = cfg('vqgan_'), cfg('mage_'), cfg('addp_')
    assert _no_ckpt(vq.model.tokenizer) == _no_ckpt(mage.model.tokenizer) \
        == _no_ckpt(addp.model.tokenizer)
    assert _no_ckpt(mage.model.token_predictor) == _no_ckpt(addp.model.token_predictor)
    enc = addp.model.backbone
    f = 2**(len(vq.model.tokenizer.ch_mult) - 1)
    assert enc.patch_size == f and enc.img_size == 32
    assert mage.model.token_predictor.num_tokens == (enc.img_size // f)**2
    for name in ('vit-tiny-p4_addp-pre_', 'vit-tiny-p4_random-init_'):
        bb = cfg(name).model.backbone
        assert (bb.arch.embed_dims, bb.arch.num_layers, bb.arch.num_heads, bb.patch_size,
                bb.img_size) == (enc.embed_dims, enc.num_layers, enc.num_heads, f, 32)
    assert cfg('vit-tiny-p4_random-init_').model.backbone.init_cfg is None
    for name in ('mask-rcnn_', 'upernet_addp-vit-tiny-p4'):
        bb = cfg(name).model.backbone
        assert (bb.arch.embed_dims, bb.arch.num_layers, bb.arch.num_heads,
                bb.patch_size) == (enc.embed_dims, enc.num_layers, enc.num_heads, f)
    assert cfg('mask-rcnn_').model.backbone.pretrain_img_size == 32


def _train(config: Config, work_dir: str, data_root: str, iters: int = 2, **options) -> str:
    from mmengine.runner import Runner
    config = config.copy()
    config.work_dir = work_dir
    config.train_cfg.max_iters = iters
    config.default_hooks.checkpoint.interval = iters
    config.default_hooks.logger.interval = 1
    config.train_dataloader.batch_size = 4
    config.train_dataloader.dataset.data_root = data_root
    config.train_dataloader.dataset.num_train = 2
    config.train_dataloader.dataset.num_val = 1
    config.custom_hooks = []
    config.merge_from_dict(options)
    runner = Runner.from_cfg(config)
    runner.train()
    return osp.join(work_dir, f'iter_{iters}.pth')


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_chain')
    data = str(root / 'photos')
    vq = _train(cfg('vqgan_'), str(root / 'vq'), data)
    tp = _train(cfg('mage_'), str(root / 'tp'), data, **{'model.tokenizer.checkpoint': vq})
    addp = _train(cfg('addp_'), str(root / 'addp'), data,
                  **{'model.tokenizer.checkpoint': vq, 'model.token_predictor.checkpoint': tp})
    return dict(vq=vq, tp=tp, addp=addp, data=data)


def test_trained_parts_load_through_the_addp_config(chain):
    from mmpretrain.registry import MODELS

    from addp_mm.utils.checkpoint import load_external_state_dict, strip_prefix
    c = cfg('addp_')
    c.model.tokenizer.checkpoint = chain['vq']
    c.model.token_predictor.checkpoint = chain['tp']
    model = MODELS.build(c.model)
    model.init_weights()
    vq_sd = strip_prefix(load_external_state_dict(chain['vq']), 'tokenizer.')
    tp_sd = strip_prefix(load_external_state_dict(chain['tp']), 'token_predictor.')
    for k, v in model.tokenizer.state_dict().items():
        assert torch.equal(v, vq_sd[k]), k
    for k, v in model.token_predictor.state_dict().items():
        assert torch.equal(v, tp_sd[k]), k
    # the trained codebook is not the random init
    fresh = MODELS.build(dict(c.model.tokenizer, checkpoint=None))
    assert not torch.equal(fresh.codebook, model.tokenizer.codebook)
    x = torch.rand(2, 3, 32, 32)
    out = model.forward_train_step(x, return_intermediates=True)
    assert torch.isfinite(out['loss'])
    # ADDP's own checkpoint carries the same tokenizer (what tools/sample.py decodes with)
    addp_sd = strip_prefix(load_external_state_dict(chain['addp']), 'tokenizer.')
    for k, v in vq_sd.items():
        assert torch.equal(addp_sd[k], v), k


def test_addp_checkpoint_loads_into_transfer_and_dense_backbones(chain):
    from mmpretrain.registry import MODELS

    from addp_mm.utils.checkpoint import load_external_state_dict, strip_prefix
    enc = strip_prefix(load_external_state_dict(chain['addp']), 'backbone.')
    c = cfg('vit-tiny-p4_addp-pre_')
    c.model.backbone.init_cfg.checkpoint = chain['addp']
    clf = MODELS.build(c.model)
    clf.init_weights()
    assert torch.equal(clf.backbone.patch_embed.projection.weight, enc['patch_embed.proj.weight'])
    assert torch.equal(clf.backbone.layers[0].attn.qkv.weight, enc['blocks.0.attn.qkv.weight'])
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for name, registry in (('mask-rcnn_', DET_MODELS), ('upernet_addp-vit-tiny-p4', SEG_MODELS)):
        bb_cfg = dict(cfg(name).model.backbone, pretrained=chain['addp'])
        bb = registry.build(bb_cfg)
        bb.init_weights()
        fc2 = bb.blocks[3].mlp.fc2 if hasattr(bb, 'blocks') else bb.layers[3].ffn.layers[1]
        assert torch.equal(fc2.weight, enc['blocks.3.mlp.fc2.weight']), name


@pytest.mark.parametrize('name,task', [('mask-rcnn_', 'detection'),
                                       ('upernet_addp-vit-tiny-p4', 'segmentation')])
def test_dense_demo_configs_train_and_validate_on_every_scene(name, task, tmp_path):
    """The dense demo stages train on all generated training scenes and
    validate on all validation scenes: no subset (``indices``) or filter
    left over from a base config shrinks them."""
    import json

    from mmengine.registry import DefaultScope

    from addp_mm.datasets.synthetic_dense import build_synthetic_ade, build_synthetic_coco
    root = str(tmp_path / task) + '/'
    if task == 'detection':
        from mmdet.registry import DATASETS
        from mmdet.utils import register_all_modules
        scope = 'mmdet'
        build_synthetic_coco(root, image_size=64, num_train=12, num_val=5)
        expected = {}
        for split in ('train', 'val'):
            with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
                ann = json.load(f)
            # every generated scene has at least one object, so none is filtered out
            assert {a['image_id'] for a in ann['annotations']} == {i['id'] for i in ann['images']}
            expected[split] = len(ann['images'])
    else:
        from mmseg.registry import DATASETS
        from mmseg.utils import register_all_modules
        scope = 'mmseg'
        build_synthetic_ade(root, image_size=32, num_train=12, num_val=5)
        expected = {split: len(glob.glob(osp.join(root, 'images', folder, '*.jpg')))
                    for split, folder in (('train', 'training'), ('val', 'validation'))}
    assert expected == {'train': 12, 'val': 5}
    register_all_modules(init_default_scope=False)
    c = cfg(name)
    for split in ('train', 'val'):
        ds_cfg = dict(c[f'{split}_dataloader'].dataset, data_root=root)
        assert 'indices' not in ds_cfg, split
        ds_cfg['pipeline'] = []
        with DefaultScope.overwrite_default_scope(scope):
            assert len(DATASETS.build(ds_cfg)) == expected[split], split
