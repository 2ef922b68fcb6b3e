"""ADDP's mask schedule (reference ``models_addp.py::random_masking``)."""
import math

import pytest
import torch

from addp_mm.models.selfsup.mask_schedule import ADDPNestedMaskGenerator


def test_grid_and_weights_match_spec():
    s = ADDPNestedMaskGenerator()
    r = s.ratios
    assert len(r) == 66
    assert r.dtype == torch.float32
    assert torch.all(r[1:] > r[:-1])
    assert abs(r[0].item() - 0.5090) < 1e-4 and abs(r[-1].item() - 0.99988) < 1e-5
    assert r.max() < 1.0 and r.min() >= 0.5
    # the grid is cos(pi/2 * k/100) for k = 66..1
    expected = torch.cos(math.pi / 2 * torch.arange(66, 0, -1, dtype=torch.float32) / 100)
    torch.testing.assert_close(r, expected)
    # weights = truncated-normal pdf (mu .55, sigma .25, on [.5, 1]) normalised
    from scipy import stats
    tn = stats.truncnorm((0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25, loc=0.55, scale=0.25)
    pdf = torch.tensor(tn.pdf(r.numpy()), dtype=torch.float64)
    torch.testing.assert_close(s.probs, pdf / pdf.sum(), rtol=1e-12, atol=1e-15)
    counts = [s.num_masked(x, 256) for x in r]
    assert counts[0] == 131 and counts[-1] == 256
    # numbers computed from the reference's schedule: E[#masked at t] = 191.3,
    # E[#masked at t+1] ~ 198.4,
    # P(t+1 fully masked) ~ 2.3%
    c = torch.tensor(counts, dtype=torch.float64)
    assert abs((s.probs * c).sum().item() - 191.3) < 0.05
    nxt = torch.zeros(66, dtype=torch.float64)
    top = full = 0.
    for i in range(66):
        for d in range(1, 6):
            j = min(i + d, 65)
            nxt[i] += c[j] / 5
            top += s.probs[i].item() / 5 * (j == 65)
            full += s.probs[i].item() / 5 * (counts[j] == 256)
    assert abs((s.probs * nxt).sum().item() - 198.4) < 0.1
    # "P(t+1 fully masked) ~ 2.3%" (from the reference's schedule) is the
    # probability of the top grid point; with ceil() the 5 highest grid ratios
    # all give 256 masked tokens, so t+1 is fully masked in ~4.6% of the batches (and t in ~2.8%)
    assert abs(top - 0.023) < 0.001
    assert counts[-5:] == [256] * 5 and counts[-6] == 255
    assert abs(full - 0.0462) < 0.001
    assert abs((s.probs * (c == 256)).sum().item() - 0.0284) < 0.001


def test_masks_nested_one_ratio_per_batch_and_seeded():
    s = ADDPNestedMaskGenerator()
    seen_t = set()
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        m_t, m_n = s(4, 256, generator=g)
        assert m_t.shape == (4, 256) and m_t.dtype == torch.float32
        n_t, n_n = m_t.sum(1), m_n.sum(1)
        # one ratio for the whole batch, exact ceil counts
        assert len(set(n_t.tolist())) == 1 and len(set(n_n.tolist())) == 1
        assert n_n[0] >= n_t[0]
        assert torch.all(m_t <= m_n)  # nested: same noise, larger cut-off
        seen_t.add(int(n_t[0]))
        # same generator state -> same masks
        g2 = torch.Generator().manual_seed(seed)
        m_t2, m_n2 = s(4, 256, generator=g2)
        assert torch.equal(m_t, m_t2) and torch.equal(m_n, m_n2)
        # the counts are those of the drawn grid indices
        g3 = torch.Generator().manual_seed(seed)
        i, j = s.sample_indices(g3)
        assert n_t[0] == s.num_masked(s.ratios[i], 256)
        assert n_n[0] == s.num_masked(s.ratios[j], 256)
    assert min(seen_t) >= 131 and max(seen_t) <= 256 and len(seen_t) > 20
    # the t+1 index is i + U{1..5}, clipped to the last grid point
    g = torch.Generator().manual_seed(1)
    offsets = {}
    for _ in range(2000):
        i, j = s.sample_indices(g)
        if i + 5 <= 65:
            offsets[j - i] = offsets.get(j - i, 0) + 1
        else:
            assert j == 65 or i < j <= 65
    assert set(offsets) == {1, 2, 3, 4, 5}
    assert max(offsets.values()) / min(offsets.values()) < 1.4
    # different samples get different masks (one noise vector per sample)
    m_t, _ = s(8, 256, generator=torch.Generator().manual_seed(0))
    assert len({tuple(r.tolist()) for r in m_t}) == 8


def test_global_rng_is_used_without_generator():
    s = ADDPNestedMaskGenerator()
    torch.manual_seed(3)
    a = s(2, 64)
    torch.manual_seed(3)
    b = s(2, 64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_ratio_distribution_matches_weights():
    s = ADDPNestedMaskGenerator()
    g = torch.Generator().manual_seed(0)
    n = 4000
    counts = torch.tensor([s.sample_counts(256, g)[0] for _ in range(n)], dtype=torch.float64)
    assert abs(counts.mean().item() - 191.3) < 1.5
    median_ratio = counts.median().item() / 256
    assert abs(median_ratio - 0.729) < 0.02


@pytest.mark.parametrize('kwargs', [dict(ratio_min=0.9, ratio_max=0.5), dict(ratio_std=0.),
                                    dict(max_offset=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ADDPNestedMaskGenerator(**kwargs)
