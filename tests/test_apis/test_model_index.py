"""The model index: every zoo config is listed by mmpretrain after `import addp_mm`, every
metafile entry points at a real config and README, and every entry builds."""
import glob
import os
import os.path as osp

import pytest
import torch
import yaml

from helpers.checkout import REPO_ROOT as ROOT
ZOO_DIRS = ('addp', 'addp_gen', 'addp_det', 'addp_seg')


def zoo_configs():
    """Config files of the zoo folders (toy and test configs live in configs/demo, configs/tests)."""
    out = {}
    for d in ZOO_DIRS:
        for path in glob.glob(osp.join(ROOT, 'configs', d, '**', '*.py'), recursive=True):
            if '_base_' not in path.split(os.sep):
                out[osp.basename(path)[:-3]] = osp.relpath(path, ROOT)
    return out


def test_zoo_folders_hold_no_test_configs():
    """Tiny models and test-only configs sit in configs/tests, not among the zoo entries."""
    misplaced = [rel for name, rel in zoo_configs().items() if 'tiny' in name or '_test_' in name]
    assert not misplaced, f'move these to configs/tests/: {misplaced}'


def metafile_models():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    models, collections = {}, {}
    for rel in index['Import']:
        with open(osp.join(ROOT, rel)) as f:
            meta = yaml.safe_load(f)
        for c in meta['Collections']:
            collections[c['Name']] = c
        for m in meta['Models']:
            assert m['Name'] not in models, f'{m["Name"]} listed twice'
            models[m['Name']] = m
    return models, collections


MODELS, COLLECTIONS = metafile_models()


def test_list_models_lists_every_zoo_config():
    import mmpretrain

    import addp_mm  # noqa: F401
    listed = set(mmpretrain.list_models('*addp*'))
    zoo = zoo_configs()
    assert len(zoo) >= 15
    assert set(zoo) <= listed, f'not in the model index: {sorted(set(zoo) - listed)}'
    assert set(MODELS) <= listed
    for name, m in MODELS.items():
        assert m['Config'] == zoo[name], f'{name}: Config {m["Config"]} is not its config file'
        assert m['In Collection'] in COLLECTIONS
    for c in COLLECTIONS.values():
        assert osp.isfile(osp.join(ROOT, c['README'])), c['README']
        assert c['Paper']['URL'] == 'https://arxiv.org/abs/2306.05423'
    # the index resolves the config path against the repository
    from mmpretrain.apis.model import ModelHub
    meta = ModelHub.get('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px')
    assert meta.config.model.sampler.num_steps == 20
    assert mmpretrain.list_models('vit-large-p16_addp*') == \
        sorted(n for n in MODELS if n.startswith('vit-large-p16_addp'))


def test_metafile_results_are_the_published_numbers():
    """The published numbers of the official release, one entry each, with no weights claimed
    where none were released."""
    def metric(name):
        return {k: v for r in (MODELS[name]['Results'] or []) for k, v in r['Metrics'].items()}
    assert metric('addp_vit-base-p16_iterdec-cosine-20step_in1k-256px') == {'FID': 8.9, 'IS': 95.3}
    assert metric('vit-large-p16_addp-pre_8xb128-coslr-50e_in1k-256px') == {'Top 1 Accuracy': 85.9}
    assert metric('mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-100e_coco') == {'box AP': 51.7}
    assert metric('upernet_addp-vit-large-p16_8xb2-amp-160k_ade20k-512x512') == {'mIoU': 54.3}
    released = {m['Weights'] for m in MODELS.values() if m.get('Weights')}
    assert released == {'addp-vit-base-16.pth', 'addp-vit-large-16.pth'}


@pytest.fixture
def meta_device(monkeypatch):
    """Build at full size without memory: parameters on the meta device. The backbones turn
    ``torch.linspace`` drop-path rates into floats, which needs real data: those stay on CPU."""
    linspace = torch.linspace
    monkeypatch.setattr(torch, 'linspace',
                        lambda *a, **k: linspace(*a, **{'device': 'cpu', **k}))
    with torch.device('meta'):
        yield


EXPECTED_TYPE = {'mmdet': 'MaskRCNN', 'mmseg': 'EncoderDecoder'}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_get_model_builds_every_entry(name, meta_device):
    """Each entry builds at its real size with mmpretrain.get_model (pretraining entries
    without the frozen parts' files, which a full ADDP checkpoint replaces) and with
    addp_mm.apis.get_model, which builds in the config's own scope."""
    import mmpretrain

    from addp_mm.apis import get_model
    ours = get_model(name)
    cfg = ours.cfg
    no_frozen = {}
    if cfg.model.type == 'ADDP' and cfg.model.get('require_frozen_checkpoints', True):
        no_frozen = dict(require_frozen_checkpoints=False, tokenizer=dict(checkpoint=None),
                         token_predictor=dict(checkpoint=None))
    theirs = mmpretrain.get_model(name, **no_frozen)
    for model in (ours, theirs):
        kind = type(model).__name__
        assert kind == EXPECTED_TYPE.get(cfg.get('default_scope'), kind)
        assert kind in ('ADDP', 'ImageClassifier', 'MaskRCNN', 'EncoderDecoder')
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in theirs.parameters())
    # the metafile's parameter count is that of the model the config builds
    assert MODELS[name]['Metadata']['Parameters'] == n_ours
    large = 'large' in name
    assert n_ours > (3e8 if large else 8e7), f'{name}: {n_ours} parameters'
    assert n_ours < (1e9 if large else 4e8), f'{name}: {n_ours} parameters'


def test_mmpretrain_get_model_loads_a_local_checkpoint(tmp_path):
    """mmpretrain.get_model(name, pretrained=LOCAL_PATH) builds a zoo entry and loads the file."""
    import mmpretrain

    import addp_mm  # noqa: F401
    name = 'vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px'

    def small():  # a fresh dict each time: merging consumes `_delete_`
        return dict(backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2,
                                            num_heads=2, feedforward_channels=64), init_cfg=None),
                    head=dict(in_channels=32, num_classes=5))

    torch.manual_seed(0)
    model = mmpretrain.get_model(name, **small())
    sd = model.state_dict()
    sd['head.fc.bias'] = torch.arange(5.)
    path = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': sd, 'meta': {'dataset_meta': {'classes': list('abcde')}}}, path)
    loaded = mmpretrain.get_model(name, pretrained=path, **small())
    assert torch.equal(loaded.head.fc.bias, torch.arange(5.))
    # the addp_mm helper reads the same file (weights_only) and builds dense configs too
    from addp_mm.apis import get_model
    assert torch.equal(get_model(name, pretrained=path, **small()).head.fc.bias, torch.arange(5.))
    with pytest.raises(ValueError, match='nothing is downloaded'):
        get_model(name, pretrained=True)
