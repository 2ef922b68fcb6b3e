"""MAGEPredictorTrainer: mask-ratio draw, masked-token loss on hand-checked
inputs, token dropping, training progress on a fixed batch of real crops, and
the checkpoint format the ADDP config reads."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import addp_mm  # noqa: F401
from addp_mm.models.selfsup.mage_training import masked_token_loss, sample_truncnorm_ratio
from addp_mm.testing import save_runner_checkpoint
from helpers.tokenizers import TINY_TOK, photo_batch
from mmpretrain.registry import MODELS

TINY_TP = dict(type='MAGETokenPredictor', num_codes=16, num_classes=1, num_tokens=64,
               embed_dims=32, depth=1, num_heads=2, decoder_embed_dims=32, decoder_depth=1,
               decoder_num_heads=2, drop_rate=0.1, fake_class_id=16)


@pytest.fixture(scope='module')
def tok_ckpt(tmp_path_factory) -> str:
    """A trained-looking tokenizer file (random weights, official key names)."""
    torch.manual_seed(1)
    tok = MODELS.build(TINY_TOK)
    path = str(tmp_path_factory.mktemp('mage') / 'tok.pth')
    torch.save({'state_dict': tok.state_dict()}, path)
    return path


def build(tok_ckpt: str, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(dict(type='MAGEPredictorTrainer',
                                   tokenizer=dict(TINY_TOK, checkpoint=tok_ckpt),
                                   token_predictor=TINY_TP), **kwargs))
    model.init_weights()
    return model.train()


def test_truncnorm_ratio_matches_mage_distribution():
    g = torch.Generator().manual_seed(0)
    r = np.array([sample_truncnorm_ratio(0.55, 0.25, 0.5, 1.0, g) for _ in range(4000)])
    assert r.min() >= 0.5 and r.max() <= 1.0
    # analytic mean of N(0.55, 0.25^2) truncated to [0.5, 1] (MAGE's mask-ratio distribution: 0.694)
    from scipy.stats import truncnorm
    a, b = (0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25
    assert r.mean() == pytest.approx(truncnorm.mean(a, b, loc=0.55, scale=0.25), abs=0.01)
    assert truncnorm.mean(a, b, loc=0.55, scale=0.25) == pytest.approx(0.694, abs=1e-3)


def test_masked_token_loss_hand_checked():
    logits = torch.tensor([[[0., math.log(3.)], [5., 0.]]])  # [1, 2, K=2]
    targets = torch.tensor([[1, 1]])
    mask = torch.tensor([[True, False]])  # only position 0 counts
    # position 0: p(target) = 3/4 -> -log(3/4)
    assert masked_token_loss(logits, targets, mask, 0.).item() == pytest.approx(-math.log(0.75))
    # label smoothing 0.1 over K=2: target dist (0.05, 0.95)
    expected = -(0.05 * math.log(0.25) + 0.95 * math.log(0.75))
    assert masked_token_loss(logits, targets, mask, 0.1).item() == pytest.approx(expected)
    # average over masked positions only
    both = masked_token_loss(logits, targets, torch.ones(1, 2, dtype=torch.bool), 0.)
    assert both.item() == pytest.approx((-math.log(0.75) + F.cross_entropy(
        torch.tensor([[5., 0.]]), torch.tensor([1])).item()) / 2)


def test_sample_masks_counts_and_nesting(tok_ckpt):
    model = build(tok_ckpt, drop_tokens=True)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        mask, drop = model.sample_masks(4, 64, torch.device('cpu'), g)
        n = mask.sum(1)
        assert (n == n[0]).all() and 32 <= int(n[0]) <= 64  # ratio in [0.5, 1]
        assert (drop.sum(1) == 32).all()  # ceil(64 * mask_ratio_min)
        assert not (drop & ~mask).any()  # dropped tokens are masked ones
    model.drop_tokens = False
    _, drop = model.sample_masks(4, 64, torch.device('cpu'), g)
    assert not drop.any()


def test_no_drop_path_is_the_inference_path(tok_ckpt):
    model = build(tok_ckpt).eval()
    x = photo_batch(2)
    tokens = model.tokenize(x)
    mask = torch.rand(2, 64) < 0.6
    with torch.no_grad():
        logits = model.predictor_logits(tokens, mask)
        probs = model.token_predictor.predict_probs(tokens, mask)
        same = model.predictor_logits(tokens, mask, torch.zeros_like(mask))
    assert torch.allclose(logits.softmax(-1), probs, atol=1e-6)
    assert torch.equal(same, logits)


def test_drop_path_ignores_dropped_tokens(tok_ckpt):
    """With token dropping the encoder never sees the dropped slots: the
    logits do not change when the ids there change (masked ids are replaced
    by the mask id anyway, so compare with a run where they are not dropped:
    these must differ, proving the encoder sequence is shorter)."""
    model = build(tok_ckpt, drop_tokens=True).eval()
    tokens = model.tokenize(photo_batch(2))
    g = torch.Generator().manual_seed(0)
    mask, drop = model.sample_masks(2, 64, torch.device('cpu'), g)
    with torch.no_grad():
        a = model.predictor_logits(tokens, mask, drop)
        other = torch.where(drop, (tokens + 1) % 16, tokens)
        b = model.predictor_logits(other, mask, drop)
        full = model.predictor_logits(tokens, mask, None)
    assert torch.equal(a, b)
    assert not torch.allclose(a, full)
    assert a.shape == (2, 64, 16)


@pytest.mark.parametrize('drop_tokens', [False, True])
def test_loss_decreases_on_fixed_batch(tok_ckpt, drop_tokens):
    model = build(tok_ckpt, drop_tokens=drop_tokens, label_smoothing=0.,
                  token_predictor=dict(TINY_TP, drop_rate=0.))
    assert model.token_predictor.training and not model.tokenizer.training
    x = photo_batch(8)
    g = torch.Generator().manual_seed(0)
    masks = [model.sample_masks(8, 64, torch.device('cpu'), g) for _ in range(4)]
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(not p.requires_grad for p in model.tokenizer.parameters())
    opt = torch.optim.AdamW(params, lr=5e-3)
    losses = []
    for i in range(40):
        mask, drop = masks[i % 4]
        out = model.forward_train_step(x, mask, drop)
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4]), losses
    assert losses[0] == pytest.approx(math.log(16), rel=0.15)  # ~uniform at init
    logged = model.loss(x)
    assert set(logged) == {'loss_mtm', 'acc_masked'}


def test_errors(tok_ckpt, tmp_path):
    with pytest.raises(ValueError, match='trained tokenizer'):
        MODELS.build(dict(type='MAGEPredictorTrainer', tokenizer=TINY_TOK, token_predictor=TINY_TP))
    with pytest.raises(FileNotFoundError, match='train the tokenizer first'):
        MODELS.build(dict(type='MAGEPredictorTrainer',
                          tokenizer=dict(TINY_TOK, checkpoint=str(tmp_path / 'nope.pth')),
                          token_predictor=TINY_TP))
    with pytest.raises(ValueError, match='num_codes=16'):
        build(tok_ckpt, token_predictor=dict(TINY_TP, num_codes=32))
    model = build(tok_ckpt)
    with pytest.raises(ValueError, match='num_tokens=64'):
        model.tokenize(photo_batch(1, size=8))


def test_runner_checkpoint_loads_as_predictor(tok_ckpt, tmp_path):
    model = build(tok_ckpt)
    x = photo_batch(4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.loss(x)['loss_mtm'].backward()
    opt.step()
    path = save_runner_checkpoint(model.state_dict(), str(tmp_path / 'iter_1.pth'), 'm_test_mage')
    tp = MODELS.build(dict(TINY_TP, checkpoint=path))
    tp.init_weights()
    for k, v in model.token_predictor.state_dict().items():
        assert torch.equal(tp.state_dict()[k], v), k
    assert not tp.training and not any(p.requires_grad for p in tp.parameters())
