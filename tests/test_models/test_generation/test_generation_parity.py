"""Fixture parity of one generation step (FIXTURES.md §6, cases A and B) and of
the soft-embedding token-to-pixel decoding, on the fixture's tiny official-format
model loaded through the converter (tools/model_converters/addp_to_mm.py)."""
import math

import pytest
import torch
from helpers.addp import build_fixture_model, load_fixture

from addp_mm.models.generation import AlternatingDenoisingSampler

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope='module')
def fixture_setup(tmp_path_factory):
    torch.set_num_threads(2)
    model, _ = build_fixture_model(str(tmp_path_factory.mktemp('gen_parity')))
    fx = load_fixture()
    images = fx['inputs']['images_uint8'].to(torch.float32) / 255
    with torch.no_grad():
        x_t = model.forward_train_step(images, fx['inputs']['token_mask_t'],
                                       fx['inputs']['token_mask_t_next'],
                                       return_intermediates=True)['x_t']
    return model, fx, images, x_t


def _check_case(sampler, model, fx, case, x):
    g = fx['generation'][case]
    probes = fx['probes']['positions']
    z0, m = fx['outputs']['token_indices_z0'], g['masks']
    with torch.no_grad():
        out = sampler.denoise_step(model, x, z0, m, step=0, num_unknown=m.sum(1).long(), greedy=True)
    logits = out['logits']
    assert logits.shape == (2, 256, 1024)
    torch.testing.assert_close(logits[:, probes], g['logits_at_probes'], **TOL)
    torch.testing.assert_close(logits.logsumexp(-1), g['logits_logsumexp'], **TOL)
    assert torch.equal(out['tokens'], g['Tt_next_bar'])
    log_p = torch.log_softmax(logits, -1).gather(-1, out['tokens'][..., None])[..., 0]
    torch.testing.assert_close(log_p, g['Tt_next_bar_log_prob'], **TOL)
    known = m == 0
    assert torch.isinf(out['confidence'][known]).all() and (out['confidence'][known] > 0).all()
    torch.testing.assert_close(out['confidence'][~known].float(), g['Tt_next_bar_log_prob'][~known], **TOL)
    assert torch.equal(out['mask'], g['masks_next'])
    return out


def test_fixture_generation_case_A(fixture_setup):
    """All masked (step 0 of 4, cosine, τ=0): the pixels are never read."""
    model, fx, images, _ = fixture_setup
    sampler = AlternatingDenoisingSampler(num_steps=4, schedule='cosine', choice_temperature=0.)
    g = fx['generation']['A']
    assert g['xt_is'] == 'input_images' and g['mask_ratio'] == 1.0 and bool((g['masks'] == 1).all())
    out = _check_case(sampler, model, fx, 'A', None)  # the skipping path: no encoder at all
    assert int(out['mask'].sum(1)[0]) == 237
    # the reference feeds the input images: the decoder discards the encoder output exactly
    with torch.no_grad():
        z0 = fx['outputs']['token_indices_z0']
        via_pixels = model.neck(model.encode_pixels(images), z0, g['masks'])
        no_pixels = model.neck(None, z0, g['masks'])
    assert torch.equal(via_pixels, no_pixels)


def test_fixture_generation_case_B(fixture_setup):
    """192 masked (ratio 0.75), xt = the pretraining step's x_t."""
    model, fx, _, x_t = fixture_setup
    g = fx['generation']['B']
    assert g['xt_is'] == 'x_t' and g['mask_ratio'] == 0.75
    sampler = AlternatingDenoisingSampler(num_steps=4, schedule='cosine', choice_temperature=0.)
    out = _check_case(sampler, model, fx, 'B', x_t)
    assert out['mask'].sum(1).tolist() == [178, 178]
    assert math.ceil(256 * math.cos(math.pi / 8) * 0.75) == 178


def test_fixture_soft_embedding_mix_and_decoded_image(fixture_setup):
    """tokens_to_pixels: soft Σ p_k e_k where masked, hard codes elsewhere, VQ-decoded (x_t, §2 step 4)."""
    model, fx, images, x_t = fixture_setup
    o, idx = fx['outputs'], fx['probes']['pixel_index']
    z0, mask_t = o['token_indices_z0'], fx['inputs']['token_mask_t']
    with torch.no_grad():
        p_next = model.token_predictor.predict_probs(z0, fx['inputs']['token_mask_t_next'])
        torch.testing.assert_close(p_next[:, fx['probes']['positions']], o['tp_prob_mask_t_next_at_probes'],
                                   atol=1e-6, rtol=1e-4)
        x = model.tokens_to_pixels(z0, p_next, mask_t)
        # all-hard decoding reproduces the VQ reconstruction
        rec = model.tokens_to_pixels(z0, None, torch.zeros_like(mask_t))
    torch.testing.assert_close(x[:, :, idx][:, :, :, idx], o['x_t_grid'], **TOL)
    torch.testing.assert_close(x.mean(dim=(2, 3)), o['x_t_mean'], **TOL)
    torch.testing.assert_close(x, x_t, atol=0, rtol=0)
    torch.testing.assert_close(rec[:, :, idx][:, :, :, idx], o['vq_decoded_grid'], **TOL)
    # the mix itself: at a masked position the latent is the expected codebook vector
    codebook = model.tokenizer.codebook
    p = int(mask_t[0].nonzero()[0])
    soft = p_next[0, p] @ codebook
    assert not torch.allclose(soft, codebook[z0[0, p]])
