"""MAGETokenPredictor: parity with the official tiny fixture (both masks),
checkpoint formats and the vqgan-copy policy, clear errors, frozen behaviour
(incl. the release's ``train_dropout``) and the official B/L key layouts."""
import os.path as osp

import pytest
import torch
from torch import nn

from addp_mm.models.target_generators import MAGETokenPredictor
from addp_mm.models.target_generators.mage_predictor import (MAGE_UNUSED_KEYS,
                                                             MAGE_UNUSED_PREFIXES,
                                                             convert_mage_state_dict)
from addp_mm.models.tokenizers import VQGANTokenizer
from addp_mm.utils.checkpoint import CheckpointError
from helpers.tokenizers import (CONFIG_DIR, load_fixture, official_mage_sd, official_vqgan_sd,
                               random_state_dict, read_key_listing, tiny_mage_kwargs,
                               tiny_vqgan_kwargs, write_official_files)

PROB_TOL = dict(atol=1e-6, rtol=1e-4)  # FIXTURES.md §10: probabilities


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_official_files(str(tmp_path_factory.mktemp('official_tiny')))


def _loaded(path, **overrides):
    kwargs = dict(tiny_mage_kwargs(), checkpoint=path)
    kwargs.update(overrides)
    model = MAGETokenPredictor(**kwargs)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def predictor(files):
    return _loaded(files['mage'])


# --------------------------------------------------------------------- parity
@pytest.mark.parametrize('mask_name', ['mask_t', 'mask_t_next'])
def test_probability_parity(predictor, mask_name):
    fx = load_fixture()
    out, pos = fx['outputs'], fx['probes']['positions']
    z0 = out['token_indices_z0']
    mask = fx['inputs']['token_' + mask_name]  # float, 1 = masked
    with torch.no_grad():
        probs = predictor.predict_probs(z0, mask)  # [B, 256, 1024]
        probs_bool = predictor.predict_probs(z0, mask.bool())
    assert probs.shape == (2, 256, 1024) and probs.dtype == torch.float32
    torch.testing.assert_close(probs[:, pos], out[f'tp_prob_{mask_name}_at_probes'], **PROB_TOL)
    torch.testing.assert_close(probs.gather(2, z0[..., None])[..., 0],
                               out[f'tp_prob_{mask_name}_at_z0'], **PROB_TOL)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 256))
    assert torch.equal(probs, probs_bool)
    # values at masked positions are ignored (they are replaced by the mask id)
    garbage = torch.where(mask.bool(), torch.full_like(z0, 2024), z0)
    with torch.no_grad():
        assert torch.equal(predictor.predict_probs(garbage, mask), probs)


def test_logits_layout(predictor):
    z0 = load_fixture()['outputs']['token_indices_z0']
    mask = torch.ones(2, 256)
    with torch.no_grad():
        logits = predictor.forward_logits(z0, mask)
    assert logits.shape == (2, 257, predictor.vocab_size)
    assert predictor.vocab_size == 2025 and predictor.mask_id == 2024
    assert predictor.fake_class_id == 1100
    # fully masked: nothing depends on the tokens, so both images agree
    torch.testing.assert_close(logits[0], logits[1])


# ------------------------------------------------- formats / vqgan-copy policy
def test_addp_release_and_converted_prefix_load_identically(files, predictor, tmp_path):
    ref = predictor.state_dict()
    from_addp = _loaded(files['addp'])  # {'model': ADDP keys}, 'token_predictor.' prefix
    path = str(tmp_path / 'mm.pth')  # converted ADDP layout under 'state_dict'
    torch.save({'state_dict': {'token_predictor.' + k: v for k, v in ref.items()}, 'meta': {}},
               path)
    for model in (from_addp, _loaded(path)):
        own = model.state_dict()
        assert set(own) == set(ref)
        assert all(torch.equal(own[k], ref[k]) for k in ref)


def test_documented_unused_keys_are_dropped_and_vqgan_copy_never_loaded(files, tmp_path):
    sd = official_mage_sd()
    converted, dropped, prefix = convert_mage_state_dict(sd)
    assert prefix == ''
    n_vq = sum(k.startswith('vqgan.') for k in sd)
    assert n_vq == 107 and sum(k.startswith('vqgan.') for k in dropped) == n_vq
    # the non-vqgan drops are exactly the fixture's never-read predictor keys
    never_read = sorted(k[len('token_predictor.'):] for k in load_fixture()['meta']['zeroed_unused_keys']
                        if k.startswith('token_predictor.'))
    assert sorted(k for k in dropped if not k.startswith('vqgan.')) == never_read
    assert all(k in MAGE_UNUSED_KEYS or k.startswith(MAGE_UNUSED_PREFIXES) for k in dropped)
    assert not any('vqgan' in k for k in MAGETokenPredictor(**tiny_mage_kwargs()).state_dict())

    # A parent holding both frozen parts: the tokenizer is loaded from its own file,
    # then the predictor from a MAGE file whose vqgan.* copy differs. The tokenizer
    # must keep its weights.
    mage = {k: (v + 1.0 if k.startswith('vqgan.') else v) for k, v in sd.items()}
    path = str(tmp_path / 'mage-other-vqgan.pth')
    torch.save({'model': mage}, path)
    parent = nn.Module()
    parent.tokenizer = VQGANTokenizer(**tiny_vqgan_kwargs(), checkpoint=files['vqgan_top'])
    parent.token_predictor = MAGETokenPredictor(**tiny_mage_kwargs(), checkpoint=path)
    for m in parent.children():
        m.init_weights()
    vq_ref = official_vqgan_sd()
    assert all(torch.equal(v, vq_ref[k]) for k, v in parent.tokenizer.state_dict().items())


# ------------------------------------------------------------------ errors
def test_input_errors(predictor):
    z = torch.zeros(2, 256, dtype=torch.long)
    m = torch.zeros(2, 256)
    with pytest.raises(ValueError, match=r'\[B, 256\]'):
        predictor.predict_probs(z[:, :255], m[:, :255])
    with pytest.raises(ValueError, match='mask shape'):
        predictor.predict_probs(z, m[:1])
    z[1, 3] = 2024  # the mask id at a visible position
    with pytest.raises(ValueError, match=r'codebook ids in \[0, 1023\].*max 2024'):
        predictor.predict_probs(z, m)
    m[1, 3] = 1  # fine once that position is masked
    assert predictor.predict_probs(z, m).shape == (2, 256, 1024)
    with pytest.raises(TypeError, match='integer'):
        predictor.predict_probs(z.float(), m)
    with pytest.raises(ValueError, match='fake_class_id'):
        MAGETokenPredictor(**dict(tiny_mage_kwargs(), fake_class_id=2024))


def test_checkpoint_errors(files, tmp_path):
    with pytest.raises(CheckpointError, match=r'missing key.*blocks\.2\.'):
        _loaded(files['mage'], depth=3)
    with pytest.raises(CheckpointError,
                       match=r'token_emb\.word_embeddings\.weight: \(2025, 24\) vs \(2025, 32\)'):
        _loaded(files['mage'], embed_dims=32)
    with pytest.raises(CheckpointError, match=r'decoder_pos_embed_learned: \(1, 257, 16\) vs '
                       r'\(1, 65, 16\)'):
        _loaded(files['mage'], num_tokens=64)
    with pytest.raises(CheckpointError, match='not found'):
        _loaded(str(tmp_path / 'mage-vitb-1600.pth'))
    sd = dict(official_mage_sd(), **{'head.weight': torch.zeros(3)})
    path = str(tmp_path / 'extra.pth')
    torch.save({'model': sd}, path)
    with pytest.raises(CheckpointError, match=r'unexpected key.*head\.weight'):
        _loaded(path)
    torch.save({'model': official_vqgan_sd()}, path)
    with pytest.raises(CheckpointError, match='no MAGE token-predictor weights'):
        _loaded(path)
    sd = official_mage_sd()
    sd['token_emb.position_ids'] = sd['token_emb.position_ids'].flip(-1)
    torch.save({'model': sd}, path)
    with pytest.raises(CheckpointError, match=r'position_ids .* not 0\.\.L-1'):
        _loaded(path)


# ------------------------------------------------------------------ frozen
def _parent(predictor):
    parent = nn.Module()
    parent.token_predictor = predictor
    parent.head = nn.Linear(4, 4)
    return parent


def test_frozen_and_train_dropout(files):
    fx = load_fixture()
    z0, mask = fx['outputs']['token_indices_z0'], fx['inputs']['token_mask_t']
    default = _loaded(files['mage'])
    parent = _parent(default).train()
    assert parent.head.training and not any(m.training for m in default.modules())
    assert not any(p.requires_grad for p in default.parameters())
    with torch.no_grad():
        p1, p2 = default.predict_probs(z0, mask), default.predict_probs(z0, mask)
    assert torch.equal(p1, p2)

    release = _loaded(files['mage'], train_dropout=True)
    assert not release.training  # eval until a parent trains it
    parent = _parent(release).train()
    assert release.training and release.blocks[0].attn.attn_drop.training
    torch.manual_seed(0)
    with torch.no_grad():
        d1, d2 = release.predict_probs(z0, mask), release.predict_probs(z0, mask)
    assert (d1 - d2).abs().max() > 1e-3  # dropout active: a stochastic teacher
    parent.eval()
    with torch.no_grad():
        assert torch.equal(release.predict_probs(z0, mask), p1)
    assert not any(p.requires_grad for p in release.parameters())


def test_frozen_parameters_never_change_under_an_optimizer(predictor):
    from mmengine.optim import build_optim_wrapper
    parent = _parent(predictor).train()
    before = {k: v.clone() for k, v in predictor.state_dict().items()}
    head_before = parent.head.weight.detach().clone()
    wrapper = build_optim_wrapper(
        parent, dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.5)))
    z = torch.zeros(1, 256, dtype=torch.long)
    probs = predictor.predict_probs(z, torch.ones(1, 256))
    loss = parent.head(probs[:, 0, :4]).sum()
    wrapper.update_params(loss)
    assert all(p.grad is None for p in predictor.parameters())
    assert all(torch.equal(v, before[k]) for k, v in predictor.state_dict().items())
    assert not torch.equal(parent.head.weight, head_before)
    state = wrapper.optimizer.state
    assert not any(p in state for p in predictor.parameters())


# ---------------------------------------------------- official sizes (configs)
@pytest.mark.parametrize('cfg_name,listing,file_name,own_params_m', [
    ('mage_vit-base-p16.py', 'mage_vit_base_patch16', 'mage-vitb-1600.pth', 146.5),
    ('mage_vit-large-p16.py', 'mage_vit_large_patch16', 'mage-vitl-1600.pth', 409.9)])
def test_official_sizes_from_configs_load_release_layout(cfg_name, listing, file_name,
                                                         own_params_m):
    from mmengine.config import Config

    import addp_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(CONFIG_DIR, cfg_name))
    tp_cfg = cfg.token_predictor.copy()
    assert osp.basename(tp_cfg.checkpoint) == file_name
    tp_cfg.checkpoint = None
    with torch.device('meta'):  # MAGE-L has ~410M parameters: build without memory
        model = MODELS.build(tp_cfg)
    assert isinstance(model, MAGETokenPredictor)
    sd = random_state_dict(listing, device='meta')
    converted, dropped, _ = convert_mage_state_dict(sd)
    model.load_official_state_dict(sd, source=listing)  # strict: raises on any mismatch
    own = model.state_dict()
    assert set(own) == set(converted)
    rows = {k: s for k, s, _ in read_key_listing(listing)}
    assert all(tuple(v.shape) == rows[k] for k, v in own.items())
    # exactly the documented-unused keys are dropped: 168 vqgan.* + 8 others
    assert sum(k.startswith('vqgan.') for k in dropped) == 168
    assert sorted(k for k in dropped if not k.startswith('vqgan.')) == sorted(
        ['cls_token', 'pos_embed', 'mask_token', 'decoder_pos_embed', 'patch_embed.proj.weight',
         'patch_embed.proj.bias', 'decoder_pred.weight', 'decoder_pred.bias'])
    assert len(converted) + len(dropped) == len(rows)
    # parameter counts of the reference ``token_predictor.py`` at B / L (file without
    # its vqgan copy)
    numel = sum(v.numel() for k, v in sd.items() if not k.startswith('vqgan.')
                and not k.endswith('position_ids'))
    assert abs(numel / 1e6 - own_params_m) < 0.05
