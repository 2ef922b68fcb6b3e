"""Official real-size checkpoints: the B/L configs build and a random state
dict in the official format converts and loads with every key accounted for."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers.addp import BASE_CFG, LARGE_CFG, ROOT, converter, read_key_list
from mmengine.config import Config

import addp_mm  # noqa: F401
from addp_mm.utils.checkpoint import CheckpointError, check_state_dict
from mmpretrain.registry import MODELS

ADDP_UNUSED = {'decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed', 'decoder_pred.weight',
               'decoder_pred.bias'}
TP_UNUSED = {'cls_token', 'pos_embed', 'mask_token', 'decoder_pos_embed', 'patch_embed.proj.weight',
             'patch_embed.proj.bias', 'decoder_pred.weight', 'decoder_pred.bias'}


def official_random_state_dict(list_name: str) -> dict:
    """Real shapes, no memory: each tensor is a stride-0 view of one random
    value (distinct per key, so a wrong mapping is visible). The VQGAN aliases
    share the tensors of ``vqgan.*`` as in the release."""
    keys = read_key_list(list_name)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, (shape, dtype) in keys.items():
        if k.startswith('token_predictor.vqgan.'):
            continue
        if dtype == 'int64':  # token_emb.position_ids
            sd[k] = torch.arange(shape[-1]).reshape(shape)
        else:
            sd[k] = torch.randn((), generator=g).expand(shape)
    for k in keys:
        if k.startswith('token_predictor.vqgan.'):
            sd[k] = sd['vqgan.' + k[len('token_predictor.vqgan.'):]]
    assert list(sd) != [] and set(sd) == set(keys)
    return sd


def build_meta_model(cfg_path: str):
    cfg = Config.fromfile(cfg_path)
    model_cfg = cfg.model
    model_cfg.require_frozen_checkpoints = False
    model_cfg.tokenizer.checkpoint = None
    model_cfg.token_predictor.checkpoint = None
    with torch.device('meta'):
        return MODELS.build(model_cfg)


@pytest.mark.parametrize('cfg_path,list_name,n_keys,depth', [
    (BASE_CFG, 'addp_vit_base_patch16.txt', 868, 12),
    (LARGE_CFG, 'addp_vit_large_patch16.txt', 1156, 24),
])
def test_official_real_size_converts_and_loads(cfg_path, list_name, n_keys, depth):
    sd = official_random_state_dict(list_name)
    assert len(sd) == n_keys
    converted, dropped = converter().convert_addp_state_dict(sd)
    n_alias = sum(k.startswith('token_predictor.vqgan.') for k in sd)
    assert n_alias == 168
    assert set(dropped) == ADDP_UNUSED | {'token_predictor.' + k for k in TP_UNUSED} | \
        {k for k in sd if k.startswith('token_predictor.vqgan.')}
    assert len(converted) + len(dropped) == len(sd)  # every key accounted for
    model = build_meta_model(cfg_path)
    assert len(model.backbone.blocks) == depth
    check_state_dict(model, converted, source=list_name)  # keys AND shapes, strict
    model.load_state_dict(converted, strict=True, assign=True)
    own = model.state_dict()
    # values went to the right places
    for src, dst in [('blocks.3.mlp.fc1.weight', 'backbone.blocks.3.mlp.fc1.weight'),
                     ('tokenizer_norm.bias', 'backbone.tokenizer_norm.bias'),
                     ('decoder_pos_token_embed', 'neck.decoder_pos_token_embed'),
                     ('mlm_layer.bias', 'neck.mlm_layer.bias'),
                     ('vqgan.decoder.conv_out.weight', 'tokenizer.decoder.conv_out.weight'),
                     ('token_predictor.mlm_layer.fc.weight', 'token_predictor.mlm_layer.fc.weight')]:
        assert own[dst].shape == sd[src].shape
        assert torch.equal(own[dst].flatten()[:1], sd[src].flatten()[:1]), dst
    # vocabulary derived from the config matches the release (2025 ids)
    assert model.neck.vocab_size == 2025 == model.token_predictor.vocab_size


def test_trainable_parameter_counts_of_official_configs():
    model = build_meta_model(BASE_CFG)
    n_enc = sum(p.numel() for p in model.backbone.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # ViT-B/16 at 256 px (257 position rows) plus tokenizer_norm and norm
    assert n_enc == 85_846_272
    assert all(not p.requires_grad for p in model.tokenizer.parameters())
    assert all(not p.requires_grad for p in model.token_predictor.parameters())
    assert n_trainable == sum(p.numel() for n, p in model.named_parameters()
                              if n.startswith(('backbone.', 'neck.')))


def _tiny_official(tmp_path):
    from helpers.addp import write_fixture_files
    return write_fixture_files(str(tmp_path))


def test_alias_mismatch_and_unknown_keys_are_errors(tmp_path):
    from helpers.addp import load_fixture
    sd = {k: v.clone() for k, v in load_fixture()['state_dict']['addp'].items()}
    bad = dict(sd)
    bad['token_predictor.vqgan.quantize.embedding.weight'] = sd['vqgan.quantize.embedding.weight'] + 1
    with pytest.raises(CheckpointError, match='differ from .* vqgan'):
        converter().convert_addp_state_dict(bad)
    extra = dict(sd, surprise_weight=torch.zeros(3))
    with pytest.raises(CheckpointError, match='unknown key.*surprise_weight'):
        converter().convert_addp_state_dict(extra)
    no_vq = {k: v for k, v in sd.items() if not k.startswith('vqgan.')}
    with pytest.raises(CheckpointError):
        converter().convert_addp_state_dict(no_vq)


@pytest.mark.e2e
def test_cli_converts_and_checks_against_config(tmp_path, monkeypatch):
    paths = _tiny_official(tmp_path)
    dst = str(tmp_path / 'out' / 'addp_tiny_mm.pth')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'model_converters', 'addp_to_mm.py'),
                           paths['addp'], dst], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '362 keys: 242 loaded, 120 dropped' in proc.stdout
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert ckpt['meta']['converted_from'] == 'addp_official_tiny.pth'
    # in-process (cheaper than more subprocesses): a file that is not an ADDP
    # release gives a one-line error; --config checks keys/shapes strictly
    for argv, msg in [([paths['mage'], dst], 'MAGE token-predictor checkpoint'),
                      ([paths['addp'], dst, '--config', BASE_CFG], 'shape mismatch')]:
        monkeypatch.setattr(sys, 'argv', ['addp_to_mm.py'] + argv)
        with pytest.raises(SystemExit, match=f'error: .*{msg}'):
            converter().main()
