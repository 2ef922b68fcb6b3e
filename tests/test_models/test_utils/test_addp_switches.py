"""ADDP-level performance switches keep the training step and the sampler's
results.

Tolerances (tiny random model, fp32 unless stated):

* ``batch_predictor_passes``: loss, target, x_t and gradients bitwise equal.
* ``fast`` preset (SDPA, channels-last, fused SiLU, batched predictor): loss
  within 1e-5 relative, gradients within 1e-4 relative / 1e-6 absolute.
* bf16 autocast training step (+ ``frozen_dtype='bf16'``): loss within 3 %,
  finite gradients.
* sampling with the ``fast`` preset (also skips the encoder / VQ decode while
  all tokens are masked): same tokens, images within 1e-4.
"""
import copy

import pytest
import torch

from addp_mm.models.utils.performance import (PRESETS, UNSET, configure_performance,
                                              describe_performance)
from helpers.performance import build_tiny_addp, images

torch.set_num_threads(1)


def _masks(n: int = 16):
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(2, n, generator=g)
    rank = noise.argsort(1).argsort(1)
    return (rank < 9).float(), (rank < 12).float()


def _step(model, x, dtype=None, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    m_t, m_next = _masks()
    ctx = torch.autocast('cpu', dtype=dtype) if dtype else torch.autocast('cpu', enabled=False)
    with ctx:
        out = model.forward_train_step(x, m_t, m_next, return_intermediates=True)
    out['loss'].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.fixture(scope='module')
def plain_result():
    model = build_tiny_addp().train()
    x = images(2, 16)
    return model, x, _step(model, x)


def test_batched_predictor_passes_bitwise_equal(plain_result):
    model, x, (out0, g0) = plain_result
    fast = copy.deepcopy(model)
    configure_performance(fast, batch_predictor_passes=True)
    assert fast.batch_predictor_passes
    calls = []
    orig = fast.token_predictor.forward_logits
    fast.token_predictor.forward_logits = lambda *a, **k: calls.append(a[0].shape[0]) or orig(*a, **k)
    out, g = _step(fast, x)
    assert calls == [4]  # one call over 2 x batch
    for key in ('loss', 'target', 'probs_next', 'x_t', 'logits'):
        assert torch.equal(out[key], out0[key]), key
    assert g.keys() == g0.keys() and all(torch.equal(g[k], g0[k]) for k in g)


def test_fast_preset_same_loss_and_gradients(plain_result):
    model, x, (out0, g0) = plain_result
    fast = copy.deepcopy(model)
    configure_performance(fast, **PRESETS['fast'])
    state = describe_performance(fast)
    assert state['sdpa'] and state['channels_last'] and state['batch_predictor_passes']
    out, g = _step(fast, x)
    torch.testing.assert_close(out['loss'], out0['loss'], rtol=1e-5, atol=0)
    for k in g0:
        torch.testing.assert_close(g[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)


def test_bf16_training_step_within_tolerance(plain_result):
    model, x, (out0, _) = plain_result
    fast = copy.deepcopy(model)
    configure_performance(fast, **dict(PRESETS['fast'], frozen_dtype='bf16'))
    out, g = _step(fast, x, dtype=torch.bfloat16)
    assert out['x_t'].dtype == torch.float32 and out['target'].dtype == torch.float32
    assert torch.isfinite(out['loss'])
    assert abs(out['loss'].item() - out0['loss'].item()) < 0.03 * out0['loss'].item()
    assert all(torch.isfinite(v).all() for v in g.values())


def test_presets_round_trip():
    model = build_tiny_addp()
    applied = configure_performance(model, **PRESETS['fast'])
    assert applied['skip_fully_masked'] is True and applied['sdpa'] is True
    configure_performance(model, **PRESETS['plain'])
    assert describe_performance(model) == dict(sdpa=False, channels_last=False, fused_act=False,
                                               frozen_dtype=None, compile=False,
                                               batch_predictor_passes=False, skip_fully_masked=False,
                                               static_decoder_length=False, compile_trainable=False,
                                               sampler_precision=None)
    assert model.tokenizer.decoder.conv_in.weight.is_contiguous()
    # UNSET leaves a switch alone
    configure_performance(model, sdpa=True, channels_last=UNSET)
    assert describe_performance(model)['sdpa'] and not model.tokenizer.channels_last


def test_sampling_fast_preset_same_result():
    plain = build_tiny_addp().eval()
    configure_performance(plain, **PRESETS['plain'])
    fast = copy.deepcopy(plain)
    configure_performance(fast, **PRESETS['fast'])
    calls = {'fast': [], 'plain': []}
    for name, m in (('fast', fast), ('plain', plain)):
        m.backbone.register_forward_hook(lambda *a, n=name: calls[n].append('enc'))
        m.tokenizer.decoder.register_forward_hook(lambda *a, n=name: calls[n].append('dec'))
    with torch.no_grad():
        ref = plain.sampler.sample(plain, seeds=[0, 1])
        out = fast.sampler.sample(fast, seeds=[0, 1])
    assert torch.equal(out['tokens'], ref['tokens'])
    torch.testing.assert_close(out['images'], ref['images'], atol=1e-4, rtol=1e-4)
    # predictions from an all-masked map (step 0 and every step after which the
    # cosine schedule still masks all N) never run the encoder (ADDP.predict_logits),
    # and with skip_fully_masked the VQ decodes producing those maps are skipped too
    from addp_mm.models.generation.schedule import num_masked_after_step
    T, N = plain.sampler.num_steps, plain.num_tokens
    all_masked = 1 + sum(num_masked_after_step(s, T, N, 'cosine', mask_ratio=1., max_masked=N) == N
                         for s in range(T - 1))
    assert all_masked >= 2
    assert calls['plain'].count('enc') == calls['fast'].count('enc') == T - all_masked
    assert calls['plain'].count('dec') == T + 1  # initial uniform-soft map + one per step
    assert calls['fast'].count('dec') == T - (all_masked - 1)
