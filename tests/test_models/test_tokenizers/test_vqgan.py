"""VQGANTokenizer: parity with the official tiny fixture, checkpoint formats,
clear errors, frozen behaviour and the official-size key layout."""
import os.path as osp

import pytest
import torch
from torch import nn

from addp_mm.models.tokenizers import VQGANTokenizer
from addp_mm.models.tokenizers.vqgan import convert_vqgan_state_dict
from addp_mm.utils.checkpoint import CheckpointError
from helpers.tokenizers import (CONFIG_DIR, fixture_images, load_fixture, official_vqgan_sd,
                               random_state_dict, read_key_listing, tiny_vqgan_kwargs,
                               write_official_files)

ATOL = RTOL = 1e-4  # FIXTURES.md §10: images and latents


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_official_files(str(tmp_path_factory.mktemp('official_tiny')))


def _loaded(path, **overrides):
    kwargs = dict(tiny_vqgan_kwargs(), checkpoint=path)
    kwargs.update(overrides)
    model = VQGANTokenizer(**kwargs)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def tokenizer(files):
    return _loaded(files['vqgan_top'])


# --------------------------------------------------------------------- parity
@pytest.mark.parametrize('fmt', ['vqgan_top', 'vqgan_state_dict'])
def test_official_file_formats_load_identically(files, fmt):
    # tensors at the top level, or under 'state_dict' (taming/Lightning layout)
    model = _loaded(files[fmt])
    ref = official_vqgan_sd()
    own = model.state_dict()
    assert set(own) == set(ref)
    for k, v in own.items():
        assert torch.equal(v, ref[k]), k


def test_encode_parity(tokenizer):
    fx = load_fixture()
    out, probes = fx['outputs'], fx['probes']
    model = tokenizer
    images = fixture_images()
    with torch.no_grad():
        indices, quant = model.encode(images)
        latents = model.encoder(images)  # pre-quantisation h [B, C, 16, 16]
    assert indices.dtype == torch.long and indices.shape == out['token_indices_z0'].shape
    assert torch.equal(indices, out['token_indices_z0'])
    pos = probes['positions']
    at_probes = latents.flatten(2)[:, :, pos].transpose(1, 2)  # [B, 6, C]
    torch.testing.assert_close(at_probes, out['vq_encoder_out_at_probes'], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(latents.double().mean((2, 3)).float(), out['vq_encoder_out_mean'],
                               atol=ATOL, rtol=RTOL)
    # the quantised map holds the exact codebook rows, raster order p = 16*h + w
    codebook = official_vqgan_sd()['quantize.embedding.weight']
    assert torch.equal(quant[1, :, 3, 5], codebook[out['token_indices_z0'][1, 3 * 16 + 5]])


def test_decode_parity(tokenizer):
    fx = load_fixture()
    out, pix = fx['outputs'], fx['probes']['pixel_index']
    with torch.no_grad():
        rec = tokenizer.decode_indices(out['token_indices_z0'])  # [B, 3, 256, 256]
    assert rec.shape == (2, 3, 256, 256)
    torch.testing.assert_close(rec[:, :, pix][:, :, :, pix], out['vq_decoded_grid'],
                               atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(rec.double().mean((2, 3)).float(), out['vq_decoded_mean'],
                               atol=ATOL, rtol=RTOL)
    # the reconstruction is not clamped (random weights go well outside [0, 1])
    assert rec.min() < -0.5 and rec.max() > 1.5


def test_embed_soft_embed_and_grid_forms(tokenizer):
    z0 = load_fixture()['outputs']['token_indices_z0']
    K = tokenizer.num_embeddings
    hard = tokenizer.embed(z0)
    assert torch.equal(tokenizer.embed(z0.view(2, 16, 16)), hard)
    assert torch.equal(tokenizer.embed(z0, grid=(16, 16)), hard)
    one_hot = nn.functional.one_hot(z0, K).float()
    torch.testing.assert_close(tokenizer.soft_embed(one_hot), hard)
    # a 50/50 mixture of two codes is the midpoint of their embeddings
    mix = 0.5 * one_hot + 0.5 * nn.functional.one_hot(torch.zeros_like(z0), K).float()
    expected = 0.5 * hard + 0.5 * tokenizer.codebook[0].view(1, -1, 1, 1)
    torch.testing.assert_close(tokenizer.soft_embed(mix), expected)
    # non-square grids
    flat = z0[:, :128]
    assert tokenizer.embed(flat, grid=(8, 16)).shape == (2, 256, 8, 16)
    with pytest.raises(ValueError, match='square grid'):
        tokenizer.embed(z0[:, :120])


def test_attributes_come_from_config():
    kw = tiny_vqgan_kwargs()
    model = VQGANTokenizer(**kw)
    assert model.downsample_factor == 2**(len(kw['ch_mult']) - 1)
    assert model.codebook.shape == (kw['num_embeddings'], kw['embed_dim'])
    small = VQGANTokenizer(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8,
                           num_embeddings=16, embed_dim=8)
    assert small.downsample_factor == 2
    idx, quant = small.encode(torch.rand(1, 3, 12, 10))
    assert idx.shape == (1, 30) and int(idx.max()) < 16 and quant.shape == (1, 8, 6, 5)
    assert small.decode(quant).shape == (1, 3, 12, 10)


# ----------------------------------------------------------------- formats
def test_prefixed_files_load_only_when_pointed_at(files, tmp_path):
    ref = official_vqgan_sd()
    # the official MAGE / ADDP releases carry the VQGAN under "vqgan."
    for key in ('mage', 'addp'):
        model = _loaded(files[key])
        for k, v in model.state_dict().items():
            assert torch.equal(v, ref[k]), k
    # a converted ADDP checkpoint ("tokenizer." prefix) plus taming's loss weights
    path = str(tmp_path / 'prefixed.pth')
    sd = {'tokenizer.' + k: v for k, v in ref.items()}
    sd['backbone.cls_token'] = torch.zeros(1, 1, 4)
    torch.save({'state_dict': sd, 'meta': {}}, path)
    model = _loaded(path)
    assert torch.equal(model.codebook, ref['quantize.embedding.weight'])
    with_loss = dict(ref, **{'loss.discriminator.main.0.weight': torch.zeros(2)})
    converted, dropped, prefix = convert_vqgan_state_dict(with_loss)
    assert prefix == '' and dropped == ['loss.discriminator.main.0.weight']
    assert set(converted) == set(ref)


# ------------------------------------------------------------------ errors
def test_input_errors(tokenizer):
    with pytest.raises(ValueError, match=r'250x256 is not divisible .* factor 16'):
        tokenizer.encode(torch.rand(1, 3, 250, 256))
    with pytest.raises(ValueError, match='3-channel images.*got 1 channels'):
        tokenizer.encode(torch.rand(1, 1, 256, 256))
    with pytest.raises(ValueError, match='shape'):
        tokenizer.encode(torch.rand(3, 256, 256))
    z = torch.zeros(1, 256, dtype=torch.long)
    z[0, 7] = 1024
    with pytest.raises(ValueError, match=r'\[0, 1023\].*max 1024'):
        tokenizer.decode_indices(z)
    z[0, 7] = -1
    with pytest.raises(ValueError, match='min -1'):
        tokenizer.embed(z)
    with pytest.raises(TypeError, match='integer'):
        tokenizer.embed(torch.zeros(1, 256))
    with pytest.raises(ValueError, match=r'\[B, 256, h, w\]'):
        tokenizer.decode(torch.zeros(1, 64, 16, 16))
    with pytest.raises(ValueError, match='z_channels'):
        VQGANTokenizer(z_channels=128, embed_dim=256)


def test_checkpoint_errors(files, tmp_path):
    # sizes that do not match the file: the first offending keys and shapes are named
    with pytest.raises(CheckpointError,
                       match=r'encoder\.conv_in\.weight: \(32, 3, 3, 3\) vs \(64, 3, 3, 3\)'):
        _loaded(files['vqgan_top'], ch=64)
    with pytest.raises(CheckpointError, match=r'missing key.*encoder\.down\.0\.block\.1'):
        _loaded(files['vqgan_top'], num_res_blocks=2)
    with pytest.raises(CheckpointError,
                       match=r'quantize\.embedding\.weight: \(1024, 256\) vs \(512, 256\)'):
        _loaded(files['vqgan_state_dict'], num_embeddings=512)
    # an undocumented extra key is refused
    sd = dict(official_vqgan_sd(), **{'quant_conv.weight': torch.zeros(256, 256, 1, 1)})
    path = str(tmp_path / 'extra.ckpt')
    torch.save({'state_dict': sd}, path)
    with pytest.raises(CheckpointError, match=r'unexpected key.*quant_conv\.weight'):
        _loaded(path)
    # a missing file
    with pytest.raises(CheckpointError, match='not found.*existing file'):
        _loaded(str(tmp_path / 'vqgan_jax_strongaug.ckpt'))
    # a file without any VQGAN keys
    path = str(tmp_path / 'other.pth')
    torch.save({'model': {'blocks.0.norm1.weight': torch.ones(4)}}, path)
    with pytest.raises(CheckpointError, match='no VQGAN weights found'):
        _loaded(path)


# ------------------------------------------------------------------ frozen
def test_frozen_in_parent_training(tokenizer):
    parent = nn.Module()
    parent.tokenizer = tokenizer
    parent.head = nn.Linear(4, 4)
    parent.train()
    assert parent.head.training
    assert not any(m.training for m in tokenizer.modules())
    assert not any(p.requires_grad for p in tokenizer.parameters())
    before = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    head_before = parent.head.weight.detach().clone()
    optim = torch.optim.AdamW(parent.parameters(), lr=1e-2, weight_decay=0.5)
    x = torch.rand(1, 3, 32, 32)
    _, quant = tokenizer.encode(x)
    loss = parent.head(tokenizer.decode(quant).mean((2, 3)).repeat(1, 2)[:, :4]).sum()
    loss.backward()
    optim.step()
    assert all(p.grad is None for p in tokenizer.parameters())
    for k, v in tokenizer.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(parent.head.weight, head_before)  # the trainable part did move


# ---------------------------------------------------- official size (config)
def test_official_size_from_config_loads_release_layout(tmp_path):
    from mmengine.config import Config

    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'vqgan_f16_1024.py'))
    listing = read_key_listing('vqgan_VQModel_release')
    sd = random_state_dict('vqgan_VQModel_release', seed=1)
    path = str(tmp_path / 'vqgan_jax_strongaug.ckpt')
    torch.save({'state_dict': sd}, path)
    tok_cfg = cfg.tokenizer.copy()
    assert tok_cfg.checkpoint.endswith('vqgan_jax_strongaug.ckpt')
    tok_cfg.checkpoint = path
    model = MODELS.build(tok_cfg)
    assert isinstance(model, VQGANTokenizer)
    own = model.state_dict()
    assert [k for k, _, _ in listing] == list(own)  # same keys, same order
    assert all(tuple(own[k].shape) == s for k, s, _ in listing)
    model.init_weights()  # strict: no missing / unexpected keys
    assert torch.equal(model.codebook, sd['quantize.embedding.weight'])
    assert torch.equal(model.state_dict()['decoder.up.3.block.0.nin_shortcut.weight'],
                       sd['decoder.up.3.block.0.nin_shortcut.weight'])
    assert model.downsample_factor == 16 and model.num_embeddings == 1024
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params / 1e6 - 54.52) < 0.01  # reference ``configs/release/vqgan.yaml``
    idx, quant = model.encode(torch.rand(1, 3, 32, 32))
    assert idx.shape == (1, 4) and quant.shape == (1, 256, 2, 2)

