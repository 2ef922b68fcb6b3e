"""ADDPVisionTransformer as the UperNet encoder (``out_type='featmap'``):
parity with the official fine-tuning ViT (fixture), output shapes at several
sizes, checkpoint loading with full key accounting and pos-embed resizing,
clear errors, registration."""
import os.path as osp

import pytest
import torch
from helpers.segmentation import REPO, make_encoder_sd, save_official, save_ours

from addp_mm.models.backbones import ADDPVisionTransformer
from addp_mm.utils.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
FIXTURE = osp.join(REPO, 'tests', 'data', 'addp_official_tiny_v1.pt')


def seg_vit(**kwargs):
    """The UperNet encoder: stride-16 maps of ``out_indices``, cls token kept inside."""
    kwargs.setdefault('arch', TINY)
    return ADDPVisionTransformer(out_type='featmap', **kwargs)


def test_parity_with_official_finetune_vit(tmp_path):
    """Global blocks + cls token + pos-embed at 256 px reproduce the reference
    fine-tuning ViT's block output (no final norm) loaded from the official
    pretraining state dict."""
    fx = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    path = str(tmp_path / 'official.pth')
    torch.save({'model': fx['state_dict']['addp']}, path)
    m = seg_vit(arch=dict(embed_dims=24, num_layers=2, num_heads=4, feedforward_channels=96),
                img_size=256, out_indices=(1,), drop_path_rate=0.1, pretrained=path)
    m.init_weights()
    m.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (fx['inputs']['images_uint8'].float() / 255. - mean) / std
    with torch.no_grad():
        feat = m(x)[0]  # [2, 24, 16, 16]
    rows = fx['probes']['token_rows'][1:] - 1  # grid positions p = 16*h + w
    got = feat.flatten(2).transpose(1, 2)[:, rows]
    ref = fx['finetune']['features_at_token_rows'][:, 1:]
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    assert {k for k, _ in m.pretrained_report['ignored']} == {
        'norm.weight', 'norm.bias', 'tokenizer_norm.weight', 'tokenizer_norm.bias'}


@pytest.mark.parametrize('hw', [(64, 64), (96, 128), (80, 48), (72, 40)])
def test_output_shapes_several_sizes(hw):
    m = seg_vit(img_size=64, out_indices=(0, 1, 2, 3))
    m.init_weights()
    outs = m(torch.randn(2, 3, *hw))
    h, w = -(-hw[0] // 16), -(-hw[1] // 16)
    assert len(outs) == 4
    assert all(o.shape == (2, 32, h, w) for o in outs)
    # outputs are successive blocks, not copies
    assert not torch.allclose(outs[0], outs[3])


@pytest.mark.parametrize('fmt', ['ours', 'official'])
def test_load_checkpoint_every_key_accounted_and_pos_resized(tmp_path, fmt):
    from mmpretrain.models.utils import resize_pos_embed
    sd = make_encoder_sd(embed_dims=32, depth=4, grid=4)  # pretraining grid 4x4 (+cls)
    path = str(tmp_path / 'c.pth')
    (save_ours if fmt == 'ours' else save_official)(sd, path)
    m = seg_vit(img_size=128, out_indices=(1, 3), pretrained=path)  # 8x8 grid
    m.init_weights()
    rep = m.pretrained_report
    ignored = {k for k, _ in rep['ignored']}
    assert len(rep['loaded']) + len(ignored) == len(sd)
    assert ignored == {'norm.weight', 'norm.bias', 'tokenizer_norm.weight', 'tokenizer_norm.bias'}
    assert set(rep['loaded']) == set(m.state_dict()) and rep['fresh'] == []
    assert m.pos_embed.shape == (1, 65, 32)
    expect = resize_pos_embed(sd['pos_embed'], (4, 4), (8, 8), 'bicubic', 1)
    assert torch.allclose(m.pos_embed.data, expect, atol=1e-6)
    assert torch.equal(m.pos_embed.data[:, :1], sd['pos_embed'][:, :1])  # cls row kept
    assert torch.equal(m.cls_token.data, sd['cls_token'])
    assert torch.equal(m.layers[3].ffn.layers[1].weight.data, sd['blocks.3.mlp.fc2.weight'])


def test_checkpoint_errors(tmp_path):
    path = save_ours(make_encoder_sd(embed_dims=48, depth=4), str(tmp_path / 'w.pth'))
    m = seg_vit(img_size=64, out_indices=(3,), pretrained=path)
    with pytest.raises(CheckpointError, match=r'embed dim 48.*embed_dims=32'):
        m.init_weights()
    nothing = str(tmp_path / 'vq.pth')
    torch.save({'state_dict': {'tokenizer.quantize.embedding.weight': torch.zeros(4, 4)}}, nothing)
    m = seg_vit(img_size=64, out_indices=(3,), pretrained=nothing)
    with pytest.raises(CheckpointError, match='no ADDP encoder weights'):
        m.init_weights()


def test_out_indices_referring_to_missing_blocks():
    with pytest.raises(ValueError, match=r'out_indices \[3, 5, 7, 11\] refer to blocks that do '
                                         r'not exist: \[5, 7, 11\].*num_layers=4'):
        seg_vit(img_size=64, out_indices=[3, 5, 7, 11])
    with pytest.raises(ValueError, match=r'do not exist: \[-5\]'):
        seg_vit(img_size=64, out_indices=[-5])
    m = seg_vit(img_size=64, out_indices=[-1, 0])
    assert list(m.out_indices) == [0, 3]


def test_defaults_and_registration():
    from mmseg.registry import MODELS
    assert MODELS.get('ADDPVisionTransformer') is ADDPVisionTransformer
    b = seg_vit(arch='b', img_size=512, out_indices=(3, 5, 7, 11))
    assert list(b.out_indices) == [3, 5, 7, 11] and b.pos_embed.shape == (1, 1 + 32 * 32, 768)
    assert b.get_layer_depth('backbone.layers.11.ln1.weight', 'backbone.') == (12, 14)
    assert b.get_layer_depth('backbone.cls_token', 'backbone.') == (0, 14)
    assert b.get_layer_depth('decode_head.conv_seg.weight', 'backbone.') == (13, 14)


def test_segmentor_layer_decay_rule():
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, 'configs/tests/upernet_addp-vit-tiny_test_ade20k-64x64.py'))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    L, base, d = 4, cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    assert d == 0.65
    g = {p['param_name']: p for p in build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups}
    assert g['backbone.patch_embed.projection.weight']['lr'] == pytest.approx(base * d ** (L + 1))
    assert g['backbone.cls_token']['lr'] == pytest.approx(base * d ** (L + 1))
    assert g['backbone.layers.0.attn.qkv.weight']['lr'] == pytest.approx(base * d ** L)
    assert g[f'backbone.layers.{L - 1}.ffn.layers.0.0.weight']['lr'] == pytest.approx(base * d)
    assert g['neck.upsample_4x.0.weight']['lr'] == pytest.approx(base)
    assert g['decode_head.conv_seg.weight']['lr'] == pytest.approx(base)
    assert g['auxiliary_head.conv_seg.weight']['lr'] == pytest.approx(base)
    # no weight decay on pos_embed, cls_token and 1-D params (MAE/BEiT)
    for k in ('backbone.pos_embed', 'backbone.cls_token', 'backbone.layers.0.ln1.weight',
              'backbone.layers.0.attn.qkv.bias', 'decode_head.conv_seg.bias'):
        assert g[k]['weight_decay'] == 0., k
    assert g['backbone.layers.0.attn.qkv.weight']['weight_decay'] == 0.05
