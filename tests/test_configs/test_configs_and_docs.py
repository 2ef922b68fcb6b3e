"""Every config runs as written or says what to run first; the drop-in snippets
of docs/detection_segmentation.md are real configs that build and run; one name per released file; the
demo's thread count is set and documented."""
import glob
import os
import os.path as osp
import re
import runpy
import sys

import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT

TRAIN = osp.join(ROOT, 'tools', 'train.py')
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))
#: configs whose data is generated on first use and that need no other file
RUNS_AS_WRITTEN = {
    'configs/tests/vit-tiny-p8_1xb16-20i_embedded-32px.py',
    'configs/demo/vqgan_ch32-f4-k128_1xb16-600i_embedded-32px.py',
    'configs/demo/vit-tiny-p4_random-init_linear-probe_1xb64-150i_embedded-32px.py',
}
DET_DROPIN = osp.join(ROOT, 'configs', 'addp_det', 'mask-rcnn_addp-vit-base-p16_dropin_1x_coco.py')
SEG_DROPIN = osp.join(ROOT, 'configs', 'addp_seg',
                      'upernet_addp-vit-base-p16_dropin_4xb4-160k_ade20k-512x512.py')


def _rel(path):
    return osp.relpath(path, ROOT)


def _run_first(path):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        from _common import run_first_hint
    finally:
        sys.path.pop(0)
    return run_first_hint(path)


def test_each_config_runs_as_written_or_says_what_to_run_first():
    assert len(CONFIGS) > 25
    for path in CONFIGS:
        hint = _run_first(path)
        if _rel(path) in RUNS_AS_WRITTEN:
            assert hint is None, path
        else:
            assert hint, f'{_rel(path)}: no "# Run first:" line in its header'


@pytest.mark.parametrize('path', [p for p in CONFIGS if _rel(p) not in RUNS_AS_WRITTEN],
                         ids=lambda p: osp.basename(p))
def test_train_tool_error_repeats_the_run_first_line(path, tmp_path, monkeypatch, capsys):
    """In a fresh folder, tools/train.py stops at once with the header's line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [TRAIN, path, '--work-dir', str(tmp_path / 'w')])
    monkeypatch.syspath_prepend(osp.dirname(TRAIN))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(TRAIN, run_name='__main__')
    msg = str(exc.value.code)
    assert msg.startswith('error: ') and '\n' not in msg, msg
    assert f'Run first: {_run_first(path)}' in msg, msg
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('rel', sorted(RUNS_AS_WRITTEN))
def test_configs_that_run_as_written_need_no_missing_file(rel, tmp_path, monkeypatch):
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        from _common import missing_inputs
    finally:
        sys.path.pop(0)
    from mmengine.config import Config
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(ROOT, rel))
    assert missing_inputs(cfg, ('train_dataloader', 'val_dataloader')) == []


# --------------------------------------------------------- drop-in configs
def _doc(rel):
    with open(osp.join(ROOT, rel), encoding='utf-8') as f:
        return f.read()


DENSE_GUIDE = 'docs/detection_segmentation.md'


@pytest.mark.parametrize('path', [DET_DROPIN, SEG_DROPIN], ids=['mmdet', 'mmseg'])
def test_dense_guide_quotes_the_dropin_configs(path):
    with open(path, encoding='utf-8') as f:
        text = f.read().strip()
    assert f'```python\n{text}\n```' in _doc(DENSE_GUIDE)


def test_seg_dropin_inherits_mmseg_and_clears_the_resnet_url():
    from mmengine.config import Config
    from mmengine.hub import get_config
    cfg = Config.fromfile(SEG_DROPIN)
    base = get_config('mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py')
    assert base.model.pretrained == 'open-mmlab://resnet50_v1c'
    assert cfg.model.pretrained is None
    assert cfg.model.backbone.type == 'ADDPVisionTransformer' and cfg.model.neck.type == 'Feature2Pyramid'
    assert cfg.train_cfg.max_iters == base.train_cfg.max_iters == 160000
    assert cfg.optim_wrapper.optimizer.lr == base.optim_wrapper.optimizer.lr


def test_base_resnet_url_reaching_an_addp_backbone_is_explained(tmp_path, monkeypatch):
    """What the mmseg drop-in avoids: the base's URL would reach the ADDP backbone. The
    download cache already holds a ResNet file under that URL's name (no network)."""
    import os.path as osp
    from urllib.parse import urlparse

    from mmengine.runner.checkpoint import get_external_models

    from addp_mm.models.backbones import ADDPVisionTransformer
    from addp_mm.utils.checkpoint import CheckpointError
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cached = tmp_path / 'hub' / 'checkpoints' / osp.basename(
        urlparse(get_external_models()['resnet50_v1c']).path)
    cached.parent.mkdir(parents=True)
    torch.save({'state_dict': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, str(cached))
    m = ADDPVisionTransformer(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64), img_size=64,
        patch_size=16, out_type='featmap', out_indices=(1, ),
        pretrained='open-mmlab://resnet50_v1c')
    with pytest.raises(CheckpointError, match='remote name.*set it to None'):
        m.init_weights()


def _shrink_backbone(cfg, embed, layers=2):
    cfg.model.backbone.arch = dict(embed_dims=embed, num_layers=layers, num_heads=2, mlp_ratio=2.)


def test_det_dropin_builds_and_runs_loss_and_predict():
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(DET_DROPIN)
    _shrink_backbone(cfg, 32)
    cfg.model.backbone.update(img_size=64, pretrain_img_size=32, window_size=2,
                              global_attn_indexes=(1, ))
    cfg.model.neck.backbone_channel = 32
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_items=[2, 1], num_classes=80,
                            with_mask=True)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(packed, False), mode='predict')
    assert len(preds) == 2 and hasattr(preds[0], 'pred_instances')


def test_seg_dropin_builds_and_runs_loss_and_predict():
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(SEG_DROPIN)
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
    cfg.model.backbone.update(img_size=64, out_indices=(0, 1, 2, 3))
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.model.neck.embed_dim = 32
    cfg.model.decode_head.update(in_channels=[32] * 4, channels=16)
    cfg.model.auxiliary_head.update(in_channels=32, channels=8)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # one process: plain BN
    model.init_weights()
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64), generator=g))
        samples.append(s)
    packed = dict(inputs=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
                          for _ in range(2)], data_samples=samples)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(packed, False), mode='predict')
    assert preds[0].pred_sem_seg.data.shape[-2:] == (64, 64)


def test_simple_fpn_arguments_in_the_dense_guide_exist():
    """Every ADDPSimpleFPN argument the dense-task guide shows is one the class takes."""
    import inspect

    from addp_mm.models.necks import ADDPSimpleFPN
    params = set(inspect.signature(ADDPSimpleFPN.__init__).parameters)
    for call in re.findall(r"type='ADDPSimpleFPN',([^)]*)\)", _doc(DENSE_GUIDE).replace('\n', ' ')):
        for arg in re.findall(r'(\w+)=', call):
            assert arg in params, arg


# ------------------------------------------------------- one name per file
RELEASE_NAMES = {'addp-vit-base-16.pth', 'addp-vit-large-16.pth', 'addp-vit-base-16_mm.pth',
                 'addp-vit-large-16_mm.pth'}


def test_one_name_per_released_file():
    pattern = re.compile(r'[\w.-]*addp[\w.-]*\.pth')
    files = [osp.join(ROOT, 'README.md'), osp.join(ROOT, 'tools', 'sample.py')] + CONFIGS + \
        glob.glob(osp.join(ROOT, 'docs', '*.md')) + \
        glob.glob(osp.join(ROOT, 'tools', 'model_converters', '*.py'))
    seen = set()
    for path in files:
        with open(path, encoding='utf-8') as f:
            for name in pattern.findall(f.read()):
                base = osp.basename(name)
                if re.match(r'addp[-_]?vit', base) and not base.startswith('addp_vit-tiny'):
                    seen.add(base)
    assert seen and seen <= RELEASE_NAMES, seen - RELEASE_NAMES


# ----------------------------------------------------------------- threads
def test_make_demo_sets_threads_and_the_demo_guide_says_how_to_change():
    with open(osp.join(ROOT, 'Makefile'), encoding='utf-8') as f:
        make = f.read()
    recipe = make[make.index('\ndemo:'):].split('\n\n')[0]
    assert 'OMP_NUM_THREADS=$(THREADS)' in recipe and '--threads $(THREADS)' in recipe
    assert re.search(r'^THREADS \?= 1$', make, re.M)
    guide = _doc('docs/demo.md')
    assert 'make demo THREADS=' in guide and '--threads' in guide


def test_demo_threads_reach_every_stage(tmp_path, monkeypatch):
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        monkeypatch.delenv(var, raising=False)
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        from addp_demo import processes as demo  # tools/demo.py runs every stage with these
    finally:
        sys.path.pop(0)
    before = torch.get_num_threads()
    try:
        assert demo.set_threads(None) == 1
        assert os.environ['OMP_NUM_THREADS'] == '1' and torch.get_num_threads() == 1
        monkeypatch.setenv('OMP_NUM_THREADS', '3')
        assert demo.set_threads(None) == 3 and os.environ['MKL_NUM_THREADS'] == '3'
        assert demo.set_threads(2) == 2 and os.environ['OPENBLAS_NUM_THREADS'] == '2'
    finally:
        torch.set_num_threads(before)


def test_missing_tiny_frozen_weights_do_not_say_download(tmp_path, monkeypatch):
    """No released tiny weights exist, so the error must not tell the user to download them."""
    import addp_mm  # noqa: F401
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'tests', 'addp_vit-tiny-p8_1xb8-300i_embedded-64px.py'))
    with pytest.raises(FileNotFoundError) as err:
        MODELS.build(cfg.model)
    assert 'Download' not in str(err.value) and 'config header' in str(err.value)
    from addp_mm.utils.checkpoint import CheckpointError, load_external_state_dict
    with pytest.raises(CheckpointError) as err:
        load_external_state_dict(cfg.model.tokenizer.checkpoint)
    assert 'Download' not in str(err.value)


# ------------------------------------------------------------ the README
def test_readme_has_the_openmmlab_shape():
    text = _doc('README.md')
    lines = text.splitlines()
    assert len(lines) <= 250, len(lines)
    assert 'make demo' in '\n'.join(lines[:8]) and 'make test' in '\n'.join(lines[:8])
    sections = re.findall(r'^## (.+)$', text, re.M)
    for name in ('Introduction', 'Installation', 'Get started', 'Model zoo', 'Citation', 'License'):
        assert name in sections, name
    assert '@inproceedings{tian2024addp' in text and 'make setup' in text
    for folder in ('addp', 'addp_gen', 'addp_det', 'addp_seg'):
        assert f'](configs/{folder}/README.md)' in text, folder
    for phrase in ('fixed since', 'earlier recorded', 'busy', 'idle'):
        assert phrase not in text, phrase
    with open(osp.join(ROOT, 'LICENSE'), encoding='utf-8') as f:
        assert 'Apache License' in f.read()
    with open(osp.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        assert "license='Apache-2.0'" in f.read()


def test_relative_links_in_readme_and_docs_resolve():
    pages = [osp.join(ROOT, 'README.md')] + glob.glob(osp.join(ROOT, 'docs', '*.md')) + \
        glob.glob(osp.join(ROOT, 'configs', '*', 'README.md'))
    broken = []
    for page in pages:
        for target in re.findall(r'\]\(([^)\s]+)\)', _doc(page)):
            path = target.split('#')[0]
            if path and '://' not in path and not osp.exists(osp.join(osp.dirname(page), path)):
                broken.append(f'{_rel(page)}: {target}')
    assert not broken, broken
