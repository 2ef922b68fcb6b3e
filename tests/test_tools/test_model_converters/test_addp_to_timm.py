"""tools/model_converters/addp_to_timm.py: timm builds the recipe, loads the
exported file strictly and gives the features of the project's encoder (fp32,
max abs diff <= 1e-5) for a tiny encoder and the ViT-B / ViT-L shapes, from
pretraining, official-layout and transfer checkpoints."""
import importlib.util
import json
import os
import os.path as osp
import pathlib
import shutil
import tempfile

import pytest
import timm
import torch
from helpers.addp import ROOT

import addp_mm  # noqa: F401
from addp_mm.models.backbones import ADDPPretrainEncoder, ADDPVisionTransformer

torch.set_num_threads(1)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _exporter():
    path = osp.join(ROOT, 'tools', 'model_converters', 'addp_to_timm.py')
    spec = importlib.util.spec_from_file_location('addp_to_timm', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EXPORTER = _exporter()


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Distinct random values everywhere (biases and norm weights too, so the
    patch-bias folding and every norm are exercised)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 20, generator=g)  # tiled (cheap for ViT-L), offset per tensor
    with torch.no_grad():
        for i, (name, p) in enumerate(module.named_parameters()):
            scale = 0.02 if p.dim() > 1 else 0.1
            base = 1.0 if name.endswith('weight') and p.dim() == 1 else 0.0
            values, flat = pool.roll(-7919 * i), p.view(-1)
            for pos in range(0, flat.numel(), values.numel()):
                chunk = flat[pos:pos + values.numel()]
                chunk.copy_(values[:chunk.numel()])
            p.mul_(scale).add_(base)


def _addp_vit(width, depth, heads, img, patch, seed=0, meta=False):
    kwargs = dict(img_size=img, patch_size=patch, embed_dims=width, num_layers=depth,
                  num_heads=heads, drop_rate=0., attn_drop_rate=0., tokenizer_drop_rate=0.)
    if meta:  # real sizes: skip the default init, fill every tensor once
        with torch.device('meta'):
            enc = ADDPPretrainEncoder(**kwargs)
        enc = enc.to_empty(device='cpu')
    else:
        enc = ADDPPretrainEncoder(**kwargs)
    enc.eval()
    _randomize(enc, seed)
    return enc


def _build_timm(summary: dict, path: str, fmt: str):
    if fmt == 'safetensors':
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location='cpu', weights_only=True)
    name, kwargs = summary['model_name'], summary['create_model_kwargs']
    with torch.device('meta'):  # no time spent on timm's own init
        model = timm.create_model(name, pretrained=False, **kwargs) if name else \
            timm.models.vision_transformer.VisionTransformer(**summary['vision_transformer_kwargs'])
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _images(n, size, seed=1):
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x, (x - IMAGENET_MEAN) / IMAGENET_STD


def _save_pretraining_ckpt(enc, path):
    """A Runner-style pretraining checkpoint: encoder + decoder/tokenizer/predictor parts."""
    sd = {f'backbone.{k}': v for k, v in enc.state_dict().items()}
    sd.update({'neck.mask_token': torch.zeros(1, 1, 8), 'neck.decoder_blocks.0.norm1.weight':
               torch.ones(8), 'tokenizer.quantize.embedding.weight': torch.zeros(4, 8),
               'token_predictor.token_emb.word_embeddings.weight': torch.zeros(4, 8)})
    torch.save(dict(state_dict=sd, meta=dict(iter=10)), path)


@pytest.mark.parametrize('fmt', ['safetensors', 'pth'])
def test_tiny_pretraining_checkpoint_round_trip(tmp_path, fmt, capsys):
    enc = _addp_vit(64, 2, 4, 32, 4, seed=0)
    src = str(tmp_path / 'addp_tiny.pth')
    _save_pretraining_ckpt(enc, src)
    dst = str(tmp_path / f'tiny_timm.{fmt}')
    EXPORTER.main([src, dst, '--num-heads', '4'])
    out = capsys.readouterr().out
    summary = json.load(open(tmp_path / 'tiny_timm.timm.json'))
    assert summary['model_name'] is None  # no registered timm name for a 64-wide ViT
    assert 'VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2' in out
    for part in ('neck', 'tokenizer', 'token_predictor'):
        assert f'dropped {part}.*' in out and part in summary['dropped']
    model = _build_timm(summary, dst, fmt)
    assert isinstance(model.norm_pre, torch.nn.LayerNorm) and model.patch_embed.proj.bias is None
    x, xn = _images(3, 32)
    with torch.no_grad():
        ref = enc(xn)
        got = model.forward_features(x.sub(IMAGENET_MEAN).div(IMAGENET_STD))
        pooled = model(xn)
    assert got.shape == ref.shape == (3, 65, 64)
    assert (got - ref).abs().max() <= 1e-5
    assert (pooled - ref[:, 1:].mean(1)).abs().max() <= 1e-5
    overlay = summary['create_model_kwargs']['pretrained_cfg_overlay']
    assert overlay['input_size'] == [3, 32, 32] and overlay['std'] == [0.229, 0.224, 0.225]


def test_safetensors_source(tmp_path):
    """A project checkpoint given as .safetensors (the same tensors) exports the same way."""
    from safetensors.torch import save_file
    enc = _addp_vit(64, 2, 4, 32, 4, seed=4)
    src = str(tmp_path / 'encoder.safetensors')
    save_file({f'backbone.{k}': v.contiguous() for k, v in enc.state_dict().items()}, src)
    dst = str(tmp_path / 'encoder_timm.pth')  # .pth from the extension
    summary = EXPORTER.export(src, dst, num_heads=4)
    assert summary['format'] == 'pth' and summary['dropped'] == {}
    model = _build_timm(summary, dst, 'pth')
    x, xn = _images(2, 32)
    with torch.no_grad():
        assert (model.forward_features(xn) - enc(xn)).abs().max() <= 1e-5


@pytest.fixture
def big_tmp(tmp_path):
    """A folder in memory (/dev/shm) where there is one: ViT-L files are 1.2 GB."""
    if not (osp.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK)):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix='addp-to-timm-', dir='/dev/shm')
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize('arch,width,depth,heads,name', [
    ('base', 768, 12, 12, 'vit_base_patch16_224'),
    ('large', 1024, 24, 16, 'vit_large_patch16_224'),
])
def test_official_layout_b_and_l(big_tmp, arch, width, depth, heads, name):
    """Real widths/depths at 32 px (a 2x2 grid), official ``{'model': ...}``
    layout (encoder keys at the top level next to the other parts)."""
    enc = _addp_vit(width, depth, heads, 32, 16, seed=2, meta=True)
    sd = dict(enc.state_dict())
    sd.update({'mask_token': torch.zeros(1, 1, 8), 'decoder_pred.weight': torch.zeros(2, 2),
               'vqgan.quantize.embedding.weight': torch.zeros(4, 8)})
    src = str(big_tmp / f'addp-vit-{arch}-16.pth')
    torch.save({'model': sd}, src)
    del sd
    dst = str(big_tmp / f'{arch}.safetensors')
    summary = EXPORTER.export(src, dst)  # standard width: the head count is known
    assert summary['model_name'] == name
    assert summary['create_model_kwargs']['img_size'] == 32
    assert set(summary['dropped']) == {'decoder', 'unused', 'vqgan'}
    model = _build_timm(summary, dst, 'safetensors')
    # timm's data config finds the input the encoder expects (the name's own is 224 px, mean 0.5)
    from timm.data import resolve_data_config
    data_cfg = resolve_data_config(model=model)
    assert data_cfg['mean'] == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(data_cfg['input_size']) == (3, 32, 32)
    assert len(model.blocks) == depth and model.blocks[0].attn.num_heads == heads
    x, xn = _images(1, 32)
    with torch.no_grad():
        diff = (model.forward_features(xn) - enc(xn)).abs().max()
    assert diff <= 1e-5, diff


@pytest.mark.parametrize('variant', ['raw_norms', 'avg_fc_norm'])
def test_transfer_checkpoint(tmp_path, variant):
    """An ImageClassifier checkpoint with an ADDPVisionTransformer backbone
    (mmpretrain names): the backbone features are reproduced, head and neck
    are dropped."""
    arch = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=256)
    if variant == 'raw_norms':
        kwargs = dict(use_tokenizer_norm=True, final_norm=True, out_type='raw')
    else:
        kwargs = dict(use_tokenizer_norm=False, final_norm=False, out_type='avg_featmap')
    bb = ADDPVisionTransformer(arch=arch, img_size=32, patch_size=4, **kwargs).eval()
    _randomize(bb, 5)
    sd = {f'backbone.{k}': v for k, v in bb.state_dict().items()}
    sd.update({'head.fc.weight': torch.zeros(14, 64), 'head.fc.bias': torch.zeros(14)})
    src = str(tmp_path / 'probe.pth')
    torch.save(dict(state_dict=sd, meta=dict()), src)
    dst = str(tmp_path / 'probe_timm.safetensors')
    summary = EXPORTER.export(src, dst, num_heads=4)
    assert summary['dropped'] == {'head': dict(keys=2, what='classification / loss head')}
    model = _build_timm(summary, dst, 'safetensors')
    x, xn = _images(2, 32)
    with torch.no_grad():
        ref = bb(xn)[-1]
        got = model.forward_features(xn) if variant == 'raw_norms' else model(xn)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-5


def test_refusals_are_one_line(tmp_path):
    enc = _addp_vit(64, 1, 4, 16, 4)
    src = str(tmp_path / 'tiny.pth')
    _save_pretraining_ckpt(enc, src)
    with pytest.raises(SystemExit, match=r'^error: cannot tell the number of attention heads'):
        EXPORTER.main([src, str(tmp_path / 'a.safetensors')])
    with pytest.raises(SystemExit, match='does not match the extension'):
        EXPORTER.main([src, str(tmp_path / 'a.pth'), '--format', 'safetensors',
                       '--num-heads', '4'])
    vitdet = {'backbone.blocks.0.attn.rel_pos_h': torch.zeros(3, 4),
              **{f'backbone.{k}': v for k, v in enc.state_dict().items()}}
    torch.save({'state_dict': vitdet}, tmp_path / 'det.pth')
    with pytest.raises(SystemExit, match='no timm VisionTransformer counterpart'):
        EXPORTER.main([str(tmp_path / 'det.pth'), str(tmp_path / 'b.safetensors'),
                       '--num-heads', '4'])
    torch.save({'state_dict': {'head.fc.weight': torch.zeros(2, 2)}}, tmp_path / 'head.pth')
    with pytest.raises(SystemExit, match='holds no ADDP encoder'):
        EXPORTER.main([str(tmp_path / 'head.pth'), str(tmp_path / 'c.safetensors')])
    assert not list(tmp_path.glob('*.safetensors')) and not list(tmp_path.glob('*.json'))
