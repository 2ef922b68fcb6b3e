"""Schedule, sampling and re-masking helpers of the ADDP sampler (reference
``engine_generate.py``)."""
import math

import pytest
import torch

from addp_mm.models.generation.schedule import (choice_temperature_at, make_generators,
                                                masked_count_schedule, num_masked_after_step,
                                                remask_by_confidence, sample_tokens, top_p_filter)

SPEC_20_COSINE = [256, 253, 249, 244, 237, 229, 219, 208, 195, 182, 167, 151, 134, 117, 98, 80,
                  60, 41, 21, 1]


def test_cosine_20_steps_matches_spec():
    assert masked_count_schedule(20, 256, 'cosine') == SPEC_20_COSINE


def test_linear_256_steps_fixes_one_token_per_step():
    counts = masked_count_schedule(256, 256, 'linear')
    assert counts[0] == 255 and counts[-1] == 1 and counts[-2] == 1
    assert all(a - b in (0, 1) for a, b in zip(counts, counts[1:]))


def test_mask_ratio_and_clipping():
    # fixture case A/B: step 0 of 4 cosine steps, ratio 1.0 and 0.75
    assert num_masked_after_step(0, 4, 256, 'cosine', 1.0) == 237
    assert num_masked_after_step(0, 4, 256, 'cosine', 0.75) == 178
    # ceil(64 * cos(pi/2 * 1/2)) = 46; clip to [1, max_masked]
    assert num_masked_after_step(0, 2, 64) == math.ceil(64 * math.cos(math.pi / 4))
    assert num_masked_after_step(1, 2, 64) == 1
    assert num_masked_after_step(0, 2, 64, max_masked=10) == 10
    # a region of 3 tokens: ceil(3 * cos) never exceeds 3, never below 1
    assert [num_masked_after_step(s, 5, 64, mask_ratio=3 / 64, max_masked=3) for s in range(5)] == \
        [3, 3, 2, 1, 1]


@pytest.mark.parametrize('steps', [0, -1, 2.5, True])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match='positive integer'):
        masked_count_schedule(steps, 256)


def test_unknown_schedule():
    with pytest.raises(ValueError, match='schedule'):
        masked_count_schedule(4, 16, 'exp')


def test_choice_temperature():
    assert choice_temperature_at(0, 20, 6.0) == pytest.approx(6.0 * 19 / 20)
    assert choice_temperature_at(19, 20, 6.0) == 0.0
    assert choice_temperature_at(19, 20, 6.0, 'static') == 6.0
    with pytest.raises(ValueError):
        choice_temperature_at(0, 20, 6.0, 'cosine')


def test_top_p_filter_keeps_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    lp = top_p_filter(probs.log(), 0.7)
    assert torch.isfinite(lp).tolist() == [[False, True, False, True]]
    lp = top_p_filter(probs.log(), 0.5)  # the top id alone reaches 0.5
    assert torch.isfinite(lp).tolist() == [[False, True, False, False]]
    assert torch.isfinite(top_p_filter(probs.log(), 1.0)).all()
    with pytest.raises(ValueError):
        top_p_filter(probs.log(), 0.0)


def test_sampling_distribution_and_top_p():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log().expand(1, 20000, 4).clone()
    ids = sample_tokens(logits, make_generators([3], 'cpu'))
    freq = torch.bincount(ids.flatten(), minlength=4).float() / ids.numel()
    assert torch.allclose(freq, probs, atol=0.015)
    ids = sample_tokens(logits, make_generators([3], 'cpu'), top_p=0.6)
    assert set(ids.unique().tolist()) == {2, 3}  # nucleus {0.4, 0.3}
    ids = sample_tokens(logits, make_generators([3], 'cpu'), temperature=1e-3)
    assert (ids == 3).all()


def test_sampling_reproducible_and_per_sample():
    logits = torch.randn(2, 50, 16)
    a = sample_tokens(logits, make_generators([7, 8], 'cpu'))
    b = sample_tokens(logits, make_generators([7, 8], 'cpu'))
    assert torch.equal(a, b)
    # sample 1 alone with its own seed gives the same ids: results do not depend on the batch
    c = sample_tokens(logits[1:], make_generators([8], 'cpu'))
    assert torch.equal(a[1:], c)
    d = sample_tokens(logits, make_generators([9, 10], 'cpu'))
    assert not torch.equal(a, d)


def test_remask_lowest_confidence_and_known_tokens():
    inf = float('inf')
    conf = torch.tensor([[0., -1., -2., inf, -0.5], [-3., -1., inf, inf, -0.2]])
    m = remask_by_confidence(conf, torch.tensor([2, 1]), 0.0)
    assert m.tolist() == [[False, True, True, False, False], [True, False, False, False, False]]
    # with strong Gumbel noise the choice is random, but counts are exact and known never chosen
    for seed in range(5):
        m = remask_by_confidence(conf, 3, 100.0, make_generators([seed, seed + 10], 'cpu'))
        assert m.sum(1).tolist() == [3, 3]
        assert not m[0, 3] and not m[1, 2] and not m[1, 3]
    m1 = remask_by_confidence(conf, 2, 6.0, make_generators([1, 2], 'cpu'))
    m2 = remask_by_confidence(conf, 2, 6.0, make_generators([1, 2], 'cpu'))
    assert torch.equal(m1, m2)
    with pytest.raises(ValueError, match='generators'):
        remask_by_confidence(conf, 2, 1.0)
