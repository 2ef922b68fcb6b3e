"""Performance switches of the frozen VQGAN tokenizer and MAGE predictor keep
the results: exactly (or to kernel rounding) in fp32, within stated
tolerances in bf16.

Tolerances (tiny random models, values O(1)):

* ``channels_last`` (fp32): same maths, different conv/GroupNorm kernels; token
  ids identical, decoded pixels within 1e-5 (bitwise equal here).
* ``fused_act`` (fp32): ``F.silu`` vs ``x*sigmoid(x)``; ids identical, pixels
  within 1e-5.
* ``frozen_dtype='bf16'``: ids agree on >= 90 % of positions (near-ties can
  flip), decoded pixels within 0.06 absolute (~4 % of the range), predictor
  probabilities within 1e-3 absolute.
* predictor ``use_sdpa`` (fp32): logits within 1e-5.
* ``predict_probs_multi`` (fp32, eval): bitwise equal to separate calls.
"""
import pytest
import torch

from addp_mm.models.target_generators import MAGETokenPredictor
from addp_mm.models.tokenizers import VQGANTokenizer
from helpers.performance import images, make_mage, make_vqgan, random_mask

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def reference():
    tok = make_vqgan()
    img = images(2, 16)
    with torch.no_grad():
        ids, quant = tok.encode(img)
        rec = tok.decode(quant)
    return img, ids, quant, rec


def _run(tok, img, quant):
    with torch.no_grad():
        ids, _ = tok.encode(img)
        return ids, tok.decode(quant)


def test_channels_last_same_results_and_state_dict(reference):
    img, ids0, quant, rec0 = reference
    tok = make_vqgan(channels_last=True)
    assert tok.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    ids, rec = _run(tok, img, quant)
    assert torch.equal(ids, ids0)
    torch.testing.assert_close(rec, rec0, atol=1e-5, rtol=1e-5)
    assert rec.is_contiguous()  # callers get the default layout back
    # same state dict (values and keys); loading a plain state dict keeps the layout
    plain = make_vqgan()
    sd, sd0 = tok.state_dict(), plain.state_dict()
    assert list(sd) == list(sd0) and all(torch.equal(sd[k], sd0[k]) for k in sd)
    other = make_vqgan(seed=1, channels_last=True)
    other.load_state_dict({k: v.contiguous() for k, v in sd0.items()})
    assert other.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(_run(other, img, quant)[0], ids0)
    tok.set_channels_last(False)
    assert tok.decoder.conv_in.weight.is_contiguous()
    assert torch.equal(_run(tok, img, quant)[0], ids0)


def test_fused_act_same_results_and_autograd(reference):
    img, ids0, quant, rec0 = reference
    tok = make_vqgan(fused_act=True)
    ids, rec = _run(tok, img, quant)
    assert torch.equal(ids, ids0)
    torch.testing.assert_close(rec, rec0, atol=1e-5, rtol=1e-5)
    # with autograd recording the activation is not in place: gradients flow
    q = quant.clone().requires_grad_(True)
    out = tok.decode(q)
    out.square().mean().backward()
    ref_q = quant.clone().requires_grad_(True)
    make_vqgan().decode(ref_q).square().mean().backward()
    torch.testing.assert_close(q.grad, ref_q.grad, atol=1e-6, rtol=1e-4)


def test_frozen_dtype_bf16_within_tolerance_and_fp32_outputs(reference, monkeypatch):
    monkeypatch.setenv('ADDP_BF16', '1')  # bf16 also on CPUs that only emulate it
    img, ids0, quant, rec0 = reference
    tok = make_vqgan(frozen_dtype='bf16', channels_last=True, fused_act=True)
    ids, rec = _run(tok, img, quant)
    assert rec.dtype == torch.float32 and rec.is_contiguous()
    assert (ids == ids0).float().mean() >= 0.9
    assert (rec - rec0).abs().max() < 0.06
    assert (rec - rec0).abs().max() > 0  # really ran in bf16


def test_frozen_dtype_fp32_overrides_outer_autocast(reference):
    img, ids0, quant, rec0 = reference
    tok = make_vqgan(frozen_dtype='fp32')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ids, rec = _run(tok, img, quant)
    assert torch.equal(ids, ids0) and torch.equal(rec, rec0)
    # None (default) follows the outer autocast: the result is then bf16-rounded
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, rec_follow = _run(make_vqgan(), img, quant)
    assert not torch.equal(rec_follow.float(), rec0)


def test_bad_frozen_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match='frozen_dtype'):
        make_vqgan(frozen_dtype='int8')
    with pytest.raises(ValueError, match='frozen_dtype'):
        make_mage(frozen_dtype='half-ish')


def test_compile_switch_same_results(reference):
    """The torch.compile path (eager backend here: tracing and graph capture are
    exercised without the minutes-long C++ build of inductor)."""
    img, ids0, quant, rec0 = reference
    tok = make_vqgan(compile=dict(backend='eager'))
    ids, rec = _run(tok, img, quant)
    assert torch.equal(ids, ids0) and torch.equal(rec, rec0)
    assert set(tok._compiled) == {'encoder', 'decoder'}
    assert list(tok.state_dict()) == list(make_vqgan().state_dict())  # nothing registered
    mage, mage_c = make_mage(), make_mage(compile=dict(backend='eager'))
    mask = random_mask(2, 16, 9)
    assert torch.equal(mage.predict_probs(ids0, mask), mage_c.predict_probs(ids0, mask))
    assert list(mage.state_dict()) == list(mage_c.state_dict())


@pytest.fixture(scope='module')
def tokens(reference):
    return reference[1]


def test_predictor_sdpa_and_bf16(tokens):
    mask = random_mask(2, 16, 10)
    plain = make_mage()
    logits0 = plain.forward_logits(tokens, mask)
    probs0 = plain.predict_probs(tokens, mask)
    sdpa = make_mage(use_sdpa=True)
    assert all(blk.attn.use_sdpa for blk in list(sdpa.blocks) + list(sdpa.decoder_blocks))
    torch.testing.assert_close(sdpa.forward_logits(tokens, mask), logits0, atol=1e-5, rtol=1e-5)
    bf16 = make_mage(use_sdpa=True, frozen_dtype='bf16')
    probs = bf16.predict_probs(tokens, mask)
    assert probs.dtype == torch.float32
    assert (probs - probs0).abs().max() < 1e-3
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 16))


def test_predict_probs_multi_equals_separate_calls(tokens):
    mage = make_mage()
    m_t = random_mask(2, 16, 8, seed=1)
    m_next = m_t | random_mask(2, 16, 12, seed=2)
    p_next, p_t = mage.predict_probs_multi(tokens, [m_next, m_t.float()])
    assert torch.equal(p_next, mage.predict_probs(tokens, m_next))
    assert torch.equal(p_t, mage.predict_probs(tokens, m_t))
    with pytest.raises(ValueError, match='at least one mask'):
        mage.predict_probs_multi(tokens, [])


def test_predict_probs_multi_with_release_dropout(tokens):
    """With the release's active dropout the batched call is a different random
    draw of the same stochastic teacher: valid distributions, not equal to eval."""
    mage = make_mage(train_dropout=True).train()
    assert mage.training
    m = random_mask(2, 16, 8)
    torch.manual_seed(0)
    a, b = mage.predict_probs_multi(tokens, [m, m])
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 16))
    assert not torch.equal(a, b)  # independent dropout draws per copy
    mage.eval()
    e1, e2 = mage.predict_probs_multi(tokens, [m, m])
    assert torch.equal(e1, e2)


def test_switches_registered_through_config():
    from mmpretrain.registry import MODELS

    import addp_mm  # noqa: F401
    from helpers.performance import TINY_MAGE, TINY_VQGAN
    tok = MODELS.build(dict(type='VQGANTokenizer', channels_last=True, frozen_dtype='bf16',
                            fused_act=True, **TINY_VQGAN))
    assert isinstance(tok, VQGANTokenizer) and tok.channels_last and tok.fused_act
    assert tok.frozen_dtype == torch.bfloat16
    mage = MODELS.build(dict(type='MAGETokenPredictor', use_sdpa=True, frozen_dtype='fp32', **TINY_MAGE))
    assert isinstance(mage, MAGETokenPredictor) and mage.frozen_dtype == torch.float32
