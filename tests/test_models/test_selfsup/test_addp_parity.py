"""Parity of the ADDP pretraining step with the reference tensors
(``tests/data/addp_official_tiny_v1.pt``, see FIXTURES.md §5, §8, §10).

The model is built at the fixture's tiny official format and its weights come
from the official-format state dict through the converter's code path.
"""
import pytest
import torch
from helpers.addp import build_fixture_model, load_fixture

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    model, meta = build_fixture_model(str(tmp_path_factory.mktemp('addp_parity')))
    return model, meta, load_fixture()


def _enc_keys():
    return ('cls_token', 'pos_embed', 'patch_embed', 'tokenizer_norm', 'blocks', 'norm')


def test_converter_accounts_for_every_key(setup):
    model, meta, fx = setup
    sd = fx['state_dict']['addp']
    assert meta['num_source_keys'] == len(sd) == 362
    # ADDP's 5 never-read tensors, 8 never-read predictor tensors, 107 VQGAN aliases
    assert len(meta['dropped']) == 5 + 8 + 107
    assert meta['num_loaded'] + len(meta['dropped']) == len(sd)
    zeroed = set(fx['meta']['zeroed_unused_keys'])
    assert zeroed <= set(meta['dropped'])
    # the loaded weights are the official ones, by name
    params = dict(model.state_dict())
    assert torch.equal(params['backbone.blocks.1.attn.qkv.weight'], sd['blocks.1.attn.qkv.weight'])
    assert torch.equal(params['neck.token_emb.weight'], sd['token_emb.weight'])
    assert torch.equal(params['tokenizer.quantize.embedding.weight'],
                       sd['vqgan.quantize.embedding.weight'])
    assert torch.equal(params['token_predictor.mlm_layer.bias'], sd['token_predictor.mlm_layer.bias'])
    # the converted file is also a valid mmengine checkpoint (Runner `load_from`)
    from mmengine.runner import load_checkpoint
    before = {k: v.clone() for k, v in params.items()}
    load_checkpoint(model, meta['path'], map_location='cpu', strict=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_decoder_and_loss_from_stored_encoder_output(setup):
    """Decoder logits/logsumexp and the loss fed with the STORED e_t, z0, mask."""
    model, _, fx = setup
    o, p = fx['outputs'], fx['probes']
    z0, mask_cls = o['token_indices_z0'], o['token_mask_t_with_cls']
    mask_t = mask_cls[:, 1:]
    assert torch.equal(mask_t, fx['inputs']['token_mask_t'])
    with torch.no_grad():
        logits = model.neck(o['e_t'], z0, mask_t)
        assert logits.shape == (2, 257 + fx['meta']['num_visible_t'], 2025)
        torch.testing.assert_close(logits[:, p['decoder_rows']], o['decoder_logits_at_rows'], **TOL)
        torch.testing.assert_close(logits.logsumexp(-1), o['decoder_logits_logsumexp'], **TOL)
        target = model.token_predictor.predict_probs(z0, mask_t)
        torch.testing.assert_close(target[:, p['positions']], o['tp_prob_mask_t_at_probes'],
                                   atol=1e-6, rtol=1e-4)
        loss = model.head.loss(logits[:, 1:257], target, mask_t)
    torch.testing.assert_close(loss, o['loss'], rtol=1e-5, atol=0)
    assert abs(loss.item() - fx['meta']['loss']) < 1e-4


def test_full_step_parity(setup):
    """x_t from our own P_next, encoder input, e_t, logits and loss end to end."""
    model, _, fx = setup
    o, p, inp = fx['outputs'], fx['probes'], fx['inputs']
    images = inp['images_uint8'].to(torch.float32) / 255
    with torch.no_grad():
        out = model.forward_train_step(images, inp['token_mask_t'], inp['token_mask_t_next'],
                                       return_intermediates=True)
        assert torch.equal(out['z0'], o['token_indices_z0'])
        torch.testing.assert_close(out['probs_next'][:, p['positions']],
                                   o['tp_prob_mask_t_next_at_probes'], atol=1e-6, rtol=1e-4)
        px = p['pixel_index']
        x_t = out['x_t']
        torch.testing.assert_close(x_t[:, :, px][:, :, :, px], o['x_t_grid'], **TOL)
        torch.testing.assert_close(x_t.mean((2, 3)), o['x_t_mean'], **TOL)
        # the reference x_t leaves [0,1] a lot, so the clamp is exercised
        assert (x_t < 0).float().mean() > 0.1
        enc_in = model.backbone.embed(model.normalize_pixels(x_t))
        torch.testing.assert_close(enc_in[:, p['token_rows']], o['encoder_input_at_token_rows'], **TOL)
        torch.testing.assert_close(out['latent'], o['e_t'], **TOL)
        torch.testing.assert_close(out['logits'][:, p['decoder_rows']], o['decoder_logits_at_rows'],
                                   **TOL)
    torch.testing.assert_close(out['loss'], o['loss_forward'], rtol=1e-5, atol=0)
    # without the clamp the encoder output would differ from the reference
    with torch.no_grad():
        unclamped = (x_t - model.pixel_mean) / model.pixel_std
        e_bad = model.backbone(unclamped)
    assert (e_bad - o['e_t']).abs().max() > 1e-2


def test_gradients(setup):
    """One backward pass in eval mode with the fixture's masks (FIXTURES §8)."""
    model, _, fx = setup
    inp = fx['inputs']
    images = inp['images_uint8'].to(torch.float32) / 255
    model.zero_grad(set_to_none=True)
    out = model.forward_train_step(images, inp['token_mask_t'], inp['token_mask_t_next'])
    out['loss'].backward()
    named = dict(model.named_parameters())
    assert set(fx['grads']) == set(fx['meta']['grad_keys'])
    for key, ref in fx['grads'].items():
        prefix = 'backbone.' if key.split('.')[0] in _enc_keys() else 'neck.'
        grad = named[prefix + key].grad
        assert grad is not None, key
        torch.testing.assert_close(grad, ref, atol=1e-5, rtol=1e-3, msg=key)
    # frozen parts got nothing; token_emb is reached only through the appended
    # reliable tokens (the MLM head uses its detached weight)
    assert all(p.grad is None for n, p in named.items()
               if n.startswith(('tokenizer.', 'token_predictor.')))
    emb_grad = named['neck.token_emb.weight'].grad
    z0 = fx['outputs']['token_indices_z0']
    visible_ids = set(z0[inp['token_mask_t'] == 0].tolist())
    touched = set(emb_grad.abs().sum(1).nonzero().flatten().tolist())
    assert touched == visible_ids
    model.zero_grad(set_to_none=True)


def test_mlm_head_uses_detached_embedding(setup):
    model, _, fx = setup
    o = fx['outputs']
    z0, mask_t = o['token_indices_z0'], fx['inputs']['token_mask_t']
    all_masked = torch.ones_like(mask_t)
    model.zero_grad(set_to_none=True)
    # all positions masked: no reliable token is appended, so token_emb can only
    # get a gradient through the output head, which must be cut
    logits = model.neck(o['e_t'], z0, all_masked)
    assert logits.shape[1] == 257
    logits.logsumexp(-1).sum().backward()
    emb = model.neck.token_emb.weight.grad
    assert emb is None or emb.abs().sum() == 0
    assert model.neck.mlm_layer.fc.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    # latent=None is allowed (and equal) when everything is masked
    with torch.no_grad():
        torch.testing.assert_close(model.neck(None, z0, all_masked), logits.detach())
        torch.testing.assert_close(model.predict_logits(None, z0, all_masked), logits[:, 1:257].detach())
