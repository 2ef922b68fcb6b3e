"""End to end: fine-tune the tiny config from an ADDP checkpoint, then evaluate top-1.

The test writes a tiny ImageNet-format dataset (class folders plus meta-list
files), trains on the folder form while validating on the meta-list form, and
tests the trained checkpoint on both forms.
"""
import json
import os
import os.path as osp
import pickle
import re

import numpy as np
import pytest
import torch
from helpers.checkout import REPO_ROOT as ROOT
from helpers.checkout import TEST_DATA as DATA
from helpers.checkout import run_tool
from PIL import Image

pytestmark = pytest.mark.e2e

CFG = osp.join(ROOT, 'configs', 'tests', 'vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
CLASSES = ['n0001', 'n0002', 'n0003', 'n0004']
N_TRAIN, N_VAL = 4, 2  # images per class


def _write_dataset(root: str) -> None:
    """Class folders `{train,val}/<class>/*.png` and `meta/{train,val}.txt`."""
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    os.makedirs(osp.join(root, 'meta'))
    for split, n in (('train', N_TRAIN), ('val', N_VAL)):
        lines = []
        for label, (cls, colour) in enumerate(zip(CLASSES, colours)):
            os.makedirs(osp.join(root, split, cls))
            for i in range(n):
                img = np.clip(np.array(colour) + rng.normal(0, 30, (72, 88, 3)), 0, 255)
                rel = f'{cls}/img_{i}.png'
                Image.fromarray(img.astype(np.uint8)).save(osp.join(root, split, rel))
                lines.append(f'{rel} {label}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def _write_config(path: str, base: str, data_root: str, ckpt: str, train_ann: str,
                  val_ann: str) -> str:
    with open(path, 'w') as f:
        f.write(f"""_base_ = [{base!r}]
model = dict(backbone=dict(init_cfg=dict(checkpoint={ckpt!r})))
train_dataloader = dict(dataset=dict(data_root={data_root!r}, ann_file={train_ann!r}))
val_dataloader = dict(dataset=dict(data_root={data_root!r}, ann_file={val_ann!r}))
test_dataloader = dict(dataset=dict(data_root={data_root!r}, ann_file={val_ann!r}))
""")
    return path


def _load_runner_ckpt(path):
    # a Runner checkpoint this test wrote itself: full unpickling is fine here
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ft')
    data_root = str(tmp / 'imagenet_tiny')
    _write_dataset(data_root)
    # an ADDP checkpoint in our Runner format, encoder from the official-format fixture
    fx = torch.load(osp.join(DATA, 'addp_official_tiny_v1.pt'), map_location='cpu',
                    weights_only=True)
    addp = fx['state_dict']['addp']
    sd = {f'backbone.{k}': v.clone().contiguous() for k, v in addp.items()
          if k.startswith(('cls_token', 'pos_embed', 'patch_embed.', 'blocks.', 'norm.',
                           'tokenizer_norm.'))}
    sd['neck.decoder_embed.weight'] = addp['decoder_embed.weight'].clone()
    ckpt = str(tmp / 'addp_tiny_pretrain.pth')
    torch.save({'state_dict': sd, 'meta': {}}, ckpt)
    # train on the class folders, validate on the meta lists
    cfg = _write_config(str(tmp / 'train_cfg.py'), CFG, data_root, ckpt, '', 'meta/val.txt')
    work = str(tmp / 'work')
    proc = run_tool([TRAIN, cfg, '--work-dir', work], cwd=str(tmp))
    return dict(tmp=tmp, data_root=data_root, pretrain=sd, work=work, ckpt=ckpt,
                log=proc.stdout + proc.stderr)


def test_finetune_loads_pretrained_and_trains(finetuned):
    log = finetuned['log']
    assert 'ADDPVisionTransformer: loaded 28 encoder tensors' in log
    assert 'ignored `tokenizer_norm.weight`' in log
    assert 'resize pos_embed' in log and 'to (4, 4)' in log
    losses = [float(v) for v in
              re.findall(r'Epoch\(train\) +\[\d\]\[\d/4\].* loss: ([0-9.]+)', log)]
    assert len(losses) == 8  # 2 epochs x 16 images / batch 4
    assert losses[0] == pytest.approx(np.log(4), abs=2e-3)  # head init std 2e-5: uniform
    assert losses[-1] < losses[0] - 0.01
    # validation on the meta-list form ran; the colour classes are easy
    top1 = float(re.findall(r'accuracy/top1: ([0-9.]+)', log)[-1])
    assert top1 >= 50.0
    ft = _load_runner_ckpt(osp.join(finetuned['work'], 'epoch_2.pth'))['state_dict']
    pre = finetuned['pretrain']
    # weights moved a little from the pretrained ones (AdamW, 8 small steps) ...
    for k_ft, k_pre in (('backbone.layers.0.attn.qkv.weight', 'backbone.blocks.0.attn.qkv.weight'),
                        ('backbone.patch_embed.projection.weight',
                         'backbone.patch_embed.proj.weight')):
        diff = (ft[k_ft] - pre[k_pre]).abs().max().item()
        assert 0 < diff < 0.05, (k_ft, diff)
    # ... and they are far from the pretraining ones for a random init
    assert (pre['backbone.blocks.0.attn.qkv.weight'].std() > 0.1)
    assert ft['backbone.pos_embed'].shape == (1, 17, 24)
    assert 'backbone.pre_norm.weight' not in ft and 'backbone.ln2.weight' in ft


@pytest.mark.parametrize('layout', ['folder', 'meta-list'])
def test_top1_on_both_layouts(finetuned, layout):
    tmp = finetuned['tmp']
    ann = '' if layout == 'folder' else 'meta/val.txt'
    cfg = _write_config(str(tmp / f'test_{layout}.py'), CFG, finetuned['data_root'],
                        finetuned['ckpt'], '', ann)
    out = str(tmp / f'preds_{layout}.pkl')
    proc = run_tool([TEST, cfg, osp.join(finetuned['work'], 'epoch_2.pth'), '--work-dir',
                     str(tmp / f'test_{layout}'), '--out', out], cwd=str(tmp))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('metrics: ')][-1]
    top1 = json.loads(line[len('metrics: '):])['accuracy/top1']
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == len(CLASSES) * N_VAL
    # labels: sorted class folders == meta-list labels
    labels = sorted(int(p['gt_label'][0]) for p in preds)
    assert labels == sorted(list(range(len(CLASSES))) * N_VAL)
    correct = sum(int(p['pred_label'][0] == p['gt_label'][0]) for p in preds)
    assert top1 == pytest.approx(100.0 * correct / len(preds), abs=1e-3)
    assert top1 >= 50.0  # chance is 25
