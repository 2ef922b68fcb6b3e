"""ADDPVisionTransformer: parity with the official fine-tuning ViT, loading, errors.

The fixture (tests/data/FIXTURES.md §7) holds the reference fine-tuning ViT at
256x256 only; it has no 224 case, so 224/384 are checked against an explicit
bicubic interpolation of the pos-embed (MAE's ``interpolate_pos_embed`` rule).
"""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from helpers.checkout import TEST_DATA as DATA

from addp_mm.models.backbones import ADDPVisionTransformer
from addp_mm.models.layers.transformer import Block
from addp_mm.utils.checkpoint import CheckpointError

FIXTURE = osp.join(DATA, 'addp_official_tiny_v1.pt')
TINY_ARCH = dict(embed_dims=24, num_layers=2, num_heads=4, feedforward_channels=96)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope='module')
def fx():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_ckpt(fx, tmp_path_factory):
    """The official-format tiny ADDP release file: ``{'model': state_dict['addp']}``."""
    path = str(tmp_path_factory.mktemp('ckpt') / 'addp_official_tiny.pth')
    sd = {k: v.clone().contiguous() for k, v in fx['state_dict']['addp'].items()}
    torch.save({'model': sd, 'epoch': 1}, path)
    return path


def _backbone(ckpt=None, **kwargs):
    cfg = dict(arch=TINY_ARCH, img_size=256, patch_size=16)
    cfg.update(kwargs)
    if ckpt is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.')
    model = ADDPVisionTransformer(**cfg)
    model.init_weights()
    return model.eval()


def _images(fx):
    images = fx['inputs']['images_uint8'].to(torch.float32) / 255
    return (images - MEAN) / STD


def test_parity_with_official_finetune_vit_256(fx, official_ckpt):
    """Reference mode reproduces the fixture's fine-tune features, pooled and logits."""
    from mmpretrain.models import ImageClassifier
    model = ImageClassifier(
        backbone=dict(type='ADDPVisionTransformer', arch=TINY_ARCH, img_size=256, patch_size=16,
                      drop_path_rate=0.1,
                      init_cfg=dict(type='Pretrained', checkpoint=official_ckpt,
                                    prefix='backbone.')),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=24))
    model.init_weights()
    model.eval()
    fresh = fx['state_dict']['finetune_vit_256_not_from_addp']
    with torch.no_grad():  # the reference's fresh fc_norm and head (not in the ADDP file)
        model.backbone.ln2.weight.copy_(fresh['fc_norm.weight'])
        model.backbone.ln2.bias.copy_(fresh['fc_norm.bias'])
        model.head.fc.weight.copy_(fresh['head.weight'])
        model.head.fc.bias.copy_(fresh['head.bias'])

    feats = {}
    model.backbone.layers[-1].register_forward_hook(lambda m, i, o: feats.update(out=o))
    with torch.no_grad():
        pooled = model.extract_feat(_images(fx))[0]
        logits = model.head(model.extract_feat(_images(fx)))
    ref = fx['finetune']
    rows = fx['probes']['token_rows']
    torch.testing.assert_close(feats['out'][:, rows], ref['features_at_token_rows'],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, ref['pooled'], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, ref['logits'], atol=1e-8, rtol=1e-4)

    # The loaded values are the official ones (not merely close outputs).
    addp = fx['state_dict']['addp']
    bb = model.backbone
    assert torch.equal(bb.patch_embed.projection.bias, addp['patch_embed.proj.bias'])
    assert torch.equal(bb.layers[1].ffn.layers[1].weight, addp['blocks.1.mlp.fc2.weight'])
    assert torch.equal(bb.pos_embed, addp['pos_embed'])


def test_every_key_is_accounted_for(fx, official_ckpt):
    model = _backbone(official_ckpt)
    rep = model.pretrained_report
    addp = fx['state_dict']['addp']
    # the 28 encoder tensors of the fine-tuning ViT are loaded ...
    expected = [k for k in fx['state_dict']['finetune_vit_256_keys']
                if not k.startswith(('fc_norm.', 'head.'))]
    assert len(rep['loaded']) == len(expected) == 28
    # ... tokenizer_norm and norm are deliberately dropped (reference fine-tuning) ...
    assert sorted(k for k, _ in rep['ignored']) == [
        'norm.bias', 'norm.weight', 'tokenizer_norm.bias', 'tokenizer_norm.weight']
    # ... fc_norm (ln2) is fresh and the other 330 keys are not encoder weights: together
    # the reference's 334 unexpected keys.
    assert sorted(rep['fresh']) == ['ln2.bias', 'ln2.weight']
    n_other = sum(rep['not_encoder'].values())
    assert n_other + len(rep['ignored']) == 334 == fx['meta']['finetune_n_unexpected_keys']
    assert rep['not_encoder']['vqgan'] == 107 and rep['not_encoder']['token_predictor'] == 180
    assert len(rep['loaded']) + len(rep['ignored']) + n_other == len(addp)
    # fresh fc_norm: LayerNorm default init
    assert torch.equal(model.ln2.weight, torch.ones(24))
    assert torch.equal(model.ln2.bias, torch.zeros(24))


def _timm_encoder(sd, x, with_norms):
    """Independent timm-style ADDP encoder forward (addp_mm's shared timm Block)."""
    blocks = torch.nn.ModuleList(Block(24, 4, 4.0, qkv_bias=True) for _ in range(2))
    blocks.load_state_dict({k[len('blocks.'):]: v for k, v in sd.items()
                            if k.startswith('blocks.')})
    blocks.eval()
    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=16)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd['cls_token'].expand(len(x), -1, -1), t], 1) + sd['pos_embed']
    if with_norms:
        t = F.layer_norm(t, (24, ), sd['tokenizer_norm.weight'], sd['tokenizer_norm.bias'], 1e-6)
    for blk in blocks:
        t = blk(t)
    if with_norms:
        t = F.layer_norm(t, (24, ), sd['norm.weight'], sd['norm.bias'], 1e-6)
    return t


def test_pretraining_norms_option_our_checkpoint_format(fx, tmp_path):
    """use_tokenizer_norm + final_norm keep the two pretraining LayerNorms.

    Also reads our own checkpoint format (``state_dict`` with ``backbone.*``).
    """
    addp = fx['state_dict']['addp']
    enc_keys = [k for k in addp if k.startswith(('cls_token', 'pos_embed', 'patch_embed.',
                                                  'blocks.', 'norm.', 'tokenizer_norm.'))]
    sd = {'backbone.' + k: addp[k].clone() for k in enc_keys}
    sd['neck.mask_token'] = addp['mask_token'].clone()
    sd['tokenizer.quantize.embedding.weight'] = addp['vqgan.quantize.embedding.weight'].clone()
    path = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': sd, 'meta': {'epoch': 3}}, path)

    x = _images(fx)[:, :, :64, :64]
    kept = _backbone(path, img_size=64, use_tokenizer_norm=True, final_norm=True,
                     out_type='raw', pretrained_patch_resolution=None)
    assert kept.pretrained_report['ignored'] == []
    assert kept.pretrained_report['not_encoder'] == {'neck': 1, 'tokenizer': 1}
    assert torch.equal(kept.pre_norm.weight, addp['tokenizer_norm.weight'])
    assert torch.equal(kept.ln1.bias, addp['norm.bias'])
    assert kept.patch_embed.projection.bias is not None  # pre-norm does not drop the bias

    # 64 px: the 16x16 pos-embed is resized to 4x4; feed the same table to the reference
    sd_timm = {k: addp[k] for k in enc_keys}
    sd_timm['pos_embed'] = kept.pos_embed.detach()
    with torch.no_grad():
        out = kept(x)[0]
        ref = _timm_encoder(sd_timm, x, with_norms=True)
        ref_plain = _timm_encoder(sd_timm, x, with_norms=False)
        plain = _backbone(path, img_size=64, out_type='raw')(x)[0]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, ref_plain, atol=1e-4, rtol=1e-4)
    assert (out - plain).abs().max() > 0.1  # the option changes the features


@pytest.mark.parametrize('img_size,grid', [(224, 14), (384, 24), ((256, 192), (16, 12))])
def test_pos_embed_resized_on_load(fx, official_ckpt, img_size, grid):
    model = _backbone(official_ckpt, img_size=img_size)
    pos = fx['state_dict']['addp']['pos_embed']
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    # MAE interpolate_pos_embed: cls row kept, grid bicubic (align_corners=False)
    src = pos[:, 1:].reshape(1, 16, 16, 24).permute(0, 3, 1, 2)
    dst = F.interpolate(src, size=(gh, gw), mode='bicubic', align_corners=False)
    expected = torch.cat([pos[:, :1], dst.permute(0, 2, 3, 1).reshape(1, gh * gw, 24)], 1)
    torch.testing.assert_close(model.pos_embed.detach(), expected, atol=1e-6, rtol=1e-6)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, h, w))[0].shape == (1, 24)


def test_without_cls_token_featmap(fx, official_ckpt):
    """Dense-prediction style: no cls token (its pos row dropped), patch feature maps."""
    model = _backbone(official_ckpt, img_size=128, with_cls_token=False, out_type='featmap',
                      out_indices=(0, 1))
    assert ('cls_token', 'with_cls_token=False (its pos-embed row is dropped too)') in \
        model.pretrained_report['ignored']
    pos = fx['state_dict']['addp']['pos_embed'][:, 1:].reshape(1, 16, 16, 24).permute(0, 3, 1, 2)
    expected = F.interpolate(pos, size=(8, 8), mode='bicubic', align_corners=False)
    torch.testing.assert_close(model.pos_embed.detach(),
                               expected.permute(0, 2, 3, 1).reshape(1, 64, 24))
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 128, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 24, 8, 8)] * 2


def test_error_no_encoder_weights(fx, tmp_path):
    addp = fx['state_dict']['addp']
    path = str(tmp_path / 'vqgan_only.pth')
    torch.save({'model': {k: v.clone() for k, v in addp.items() if k.startswith('vqgan.')}}, path)
    with pytest.raises(CheckpointError, match='no ADDP encoder weights'):
        _backbone(path)
    with pytest.raises(CheckpointError, match='not found'):
        _backbone(str(tmp_path / 'missing.pth'))


def test_error_non_square_pos_embed(fx, tmp_path):
    addp = fx['state_dict']['addp']
    sd = {k: v.clone() for k, v in addp.items() if k.startswith(('cls_token', 'patch_embed.',
                                                                 'blocks.'))}
    # a 3x4 grid (e.g. pretrained on 48x64 inputs): 12 positions + cls
    sd['pos_embed'] = addp['pos_embed'][:, :13].clone()
    path = str(tmp_path / 'nonsquare.pth')
    torch.save({'model': sd}, path)
    with pytest.raises(CheckpointError, match='square grid.*pretrained_patch_resolution'):
        _backbone(path, img_size=64)
    # the interpolation path: give the grid explicitly
    model = _backbone(path, img_size=64, pretrained_patch_resolution=(3, 4))
    src = sd['pos_embed'][:, 1:].reshape(1, 3, 4, 24).permute(0, 3, 1, 2)
    dst = F.interpolate(src, size=(4, 4), mode='bicubic', align_corners=False)
    torch.testing.assert_close(model.pos_embed[:, 1:].detach(),
                               dst.permute(0, 2, 3, 1).reshape(1, 16, 24))
    with pytest.raises(CheckpointError, match='pretrained_patch_resolution'):
        _backbone(path, img_size=64, pretrained_patch_resolution=(4, 4))


def test_error_mismatches(fx, official_ckpt, tmp_path):
    # the file has 2 blocks, the model 3
    with pytest.raises(CheckpointError, match=r'2 transformer blocks.*num_layers=3'):
        _backbone(official_ckpt, arch=dict(TINY_ARCH, num_layers=3))
    # a fine-tuned file has no tokenizer_norm / norm
    addp = fx['state_dict']['addp']
    ft = {k: addp[k].clone() for k in fx['state_dict']['finetune_vit_256_keys'] if k in addp}
    ft.update({k: v.clone() for k, v in fx['state_dict']['finetune_vit_256_not_from_addp'].items()})
    path = str(tmp_path / 'finetuned.pth')
    torch.save({'model': ft}, path)
    assert len(_backbone(path).pretrained_report['loaded']) == 28
    with pytest.raises(CheckpointError, match='use_tokenizer_norm=False'):
        _backbone(path, use_tokenizer_norm=True)
    with pytest.raises(CheckpointError, match='final_norm=False'):
        _backbone(path, final_norm=True)
    with pytest.raises(TypeError, match='use_tokenizer_norm'):
        ADDPVisionTransformer(arch=TINY_ARCH, pre_norm=True)
    with pytest.raises(ValueError, match='not both'):
        ADDPVisionTransformer(arch=TINY_ARCH, pretrained=path,
                              init_cfg=dict(type='Pretrained', checkpoint=path))


def test_init_cfg_list_goes_through_the_key_accounting(fx, official_ckpt):
    """A ``Pretrained`` entry inside an init_cfg list loads through the same
    accounting as ``pretrained=`` (never through mmengine's PretrainedInit);
    the other entries still run."""
    from addp_mm.models.backbones import ADDPViTDetBackbone
    init_cfg = [dict(type='Pretrained', checkpoint=official_ckpt),
                dict(type='Constant', layer='LayerNorm', val=0.5, bias=0.)]
    listed = ADDPVisionTransformer(arch=TINY_ARCH, img_size=256, patch_size=16,
                                   init_cfg=init_cfg)
    listed.init_weights()
    direct = _backbone(official_ckpt)
    assert listed.pretrained_report['loaded'] == direct.pretrained_report['loaded']
    assert listed.pretrained_report['not_encoder'] == direct.pretrained_report['not_encoder']
    for k, v in direct.state_dict().items():
        if not k.startswith('ln2.'):
            assert torch.equal(listed.state_dict()[k], v), k
    assert torch.equal(listed.ln2.weight, torch.full((24, ), 0.5))  # the Constant entry ran
    det = ADDPViTDetBackbone(arch=dict(embed_dims=24, num_layers=2, num_heads=4), img_size=512,
                             pretrain_img_size=256, window_size=4, init_cfg=init_cfg[:1])
    det.init_weights()
    assert {k for k, _ in det.pretrained_report['ignored']} == {
        'cls_token', 'norm.weight', 'norm.bias', 'tokenizer_norm.weight', 'tokenizer_norm.bias'}
    assert torch.equal(det.blocks[1].mlp.fc2.weight,
                       fx['state_dict']['addp']['blocks.1.mlp.fc2.weight'])


def test_linear_probe_freezing(fx, official_ckpt):
    """frozen_stages=depth freezes everything and keeps drop-path off in train mode."""
    model = _backbone(official_ckpt, frozen_stages=2, use_tokenizer_norm=True, final_norm=True,
                      drop_path_rate=0.5)
    x = _images(fx)
    with torch.no_grad():
        eval_out = model(x)[0]
        model.train()
        train_out = model(x)[0]
    assert not any(p.requires_grad for p in model.parameters())
    assert all(not m.training for m in model.layers) and not model.ln2.training
    torch.testing.assert_close(train_out, eval_out, atol=0, rtol=0)


def test_registered_in_all_codebases():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRE
    from mmseg.registry import MODELS as SEG
    for reg in (PRE, DET, SEG):
        assert reg.get('ADDPVisionTransformer') is ADDPVisionTransformer


def _listing(name):
    """``{key: meta tensor}`` from a real-size checkpoint key listing."""
    out = {}
    with open(osp.join(DATA, 'checkpoint_keys', name)) as f:
        for line in f:
            key, shape, _ = line.split()
            dims = [int(s) for s in shape.strip('[]').split(',') if s]
            out[key] = torch.empty(dims, device='meta')
    return out


@pytest.mark.parametrize('arch,width,pretrain,finetune', [
    ('base', 768, 'addp_vit_base_patch16.txt', 'finetune_vit_base_patch16_img256.txt'),
    ('large', 1024, 'addp_vit_large_patch16.txt', 'finetune_vit_large_patch16_img256.txt'),
])
def test_real_size_checkpoint_keys_match(arch, width, pretrain, finetune):
    """Real ADDP-B/L release keys map one-to-one onto the backbone (shapes only)."""
    from addp_mm.models.utils.encoder_checkpoint import (encoder_state_dict_from,
                                                         timm_vit_to_mmpretrain)
    from addp_mm.utils.checkpoint import check_state_dict
    with torch.device('meta'):
        ref = ADDPVisionTransformer(arch=arch, img_size=256)
        kept = ADDPVisionTransformer(arch=arch, img_size=256, use_tokenizer_norm=True,
                                     final_norm=True)
    # official fine-tuning ViT: its keys minus fc_norm/head == ours minus ln2 (fc_norm)
    ft = _listing(finetune)
    ft_enc = timm_vit_to_mmpretrain({k: v for k, v in ft.items()
                                     if not k.startswith(('fc_norm.', 'head.'))})
    ft_enc.update({'ln2.' + k[len('fc_norm.'):]: v for k, v in ft.items()
                   if k.startswith('fc_norm.')})
    check_state_dict(ref, ft_enc, finetune)
    assert tuple(ft['head.weight'].shape) == (1000, width)
    # pretraining release: all encoder keys incl. tokenizer_norm/norm in the kept mode
    enc = encoder_state_dict_from(_listing(pretrain), pretrain)
    sd = timm_vit_to_mmpretrain(enc)
    sd.update({k: v for k, v in kept.state_dict().items() if k.startswith('ln2.')})
    check_state_dict(kept, sd, pretrain)
    n_params = sum(p.numel() for p in ref.parameters()) + width * 1000 + 1000
    assert n_params / 1e6 == pytest.approx({'base': 86.61, 'large': 304.39}[arch], abs=0.01)
