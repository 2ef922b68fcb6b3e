"""FID / IS arithmetic on known answers, folder and metric plumbing with a tiny feature net."""
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from addp_mm.evaluation.fid import (ADDPGenerationMetric, FeatureExtractor, build_inception,
                                    compute_fid_is, feature_statistics, frechet_distance,
                                    inception_score, load_statistics, save_statistics)


class TinyFeatureNet(nn.Module):
    """uint8 images -> (8-d features, 5 logits); deterministic random weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        assert x.dtype == torch.uint8
        f = self.conv(x.float() / 255.).relu().mean(dim=(2, 3))
        return f, self.fc(f)


def _sqrtm_psd(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _closed_form(mu1, s1, mu2, s2):
    """Fréchet distance of two Gaussians via symmetric square roots (independent of the code's route)."""
    r1 = _sqrtm_psd(s1)
    root = _sqrtm_psd(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_of_a_set_with_itself_is_zero():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    # exact statistics: matches the sqrtm closed form (non-commuting covariances)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-8)
    # diagonal case: sum (sqrt(a) - sqrt(b))^2 + |mu1 - mu2|^2
    a, b = np.array([1., 4., 9.]), np.array([4., 1., 1.])
    expect = 3 ** 2 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.array([3., 0, 0]), np.diag(b)) == pytest.approx(expect)
    # sampled Gaussian features converge to the closed form
    x1 = rng.multivariate_normal(mu1, s1, size=40000)
    x2 = rng.multivariate_normal(mu2, s2, size=40000)
    est = frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    assert est == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=0.03)


def test_statistics_mismatch_error():
    with pytest.raises(ValueError, match='same feature network'):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='at least 2'):
        feature_statistics(torch.zeros(1, 3))


def test_inception_score_known_answers():
    mean, std = inception_score(torch.zeros(100, 10), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # confident, evenly spread predictions over C classes: IS = C
    c = 5
    logits = torch.full((1000, c), -1e4)
    logits[torch.arange(1000), torch.arange(1000) % c] = 0.
    mean, _ = inception_score(logits, splits=1)
    assert mean == pytest.approx(c, rel=1e-6)
    with pytest.raises(ValueError, match='splits'):
        inception_score(torch.zeros(3, 4), splits=10)


def _write_images(folder, n, seed):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        p = osp.join(folder, f'{i:03d}.png')
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_folder_vs_folder_and_stats_file(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    for f in (a, b, c):
        f.mkdir()
    _write_images(str(a), 12, 0)
    for p in sorted(a.iterdir()):
        shutil.copy(p, b / p.name)
    _write_images(str(c), 12, 1)
    net = TinyFeatureNet()
    same = compute_fid_is(str(a), str(b), net, batch_size=5, isc_splits=2)
    assert abs(same['fid']) < 1e-6 and same['num_images'] == 12 and same['is_mean'] >= 1.0
    diff = compute_fid_is(str(a), str(c), net, batch_size=5, compute_is=False)
    assert diff['fid'] > 1e-5
    # precomputed statistics give the same number as the folder
    ext = FeatureExtractor(net)
    from addp_mm.evaluation.fid import folder_features
    mu, sigma = feature_statistics(folder_features(str(c), ext)[0])
    save_statistics(str(tmp_path / 'ref.npz'), mu, sigma, 12)
    mu2, sigma2 = load_statistics(str(tmp_path / 'ref.npz'))
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    via_npz = compute_fid_is(str(a), str(tmp_path / 'ref.npz'), net, compute_is=False)
    assert via_npz['fid'] == pytest.approx(diff['fid'], rel=1e-9)


def test_missing_inception_weights_is_a_clear_error(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth.*torch-fidelity'):
        build_inception(missing)
    with pytest.raises(FileNotFoundError, match='inception_weights'):
        ADDPGenerationMetric(inception_weights=missing)


def test_torch_fidelity_inception_loads_offline(random_inception_file):
    """build_inception reads torch-fidelity's network from a local file (random weights here)."""
    model = build_inception(random_inception_file)
    sd = torch.load(random_inception_file, map_location='cpu', weights_only=True)
    assert torch.equal(model.fc.weight, sd['fc.weight'])
    feats, logits = FeatureExtractor(model)(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(feats).all() and not torch.equal(feats[0], feats[1])


def test_generation_metric_end_to_end(tmp_path):
    from mmpretrain.structures import DataSample
    ref = tmp_path / 'ref'
    ref.mkdir()
    paths = _write_images(str(ref), 6, 0)
    from addp_mm.evaluation.fid import load_image_uint8
    imgs = [load_image_uint8(p) for p in paths]
    metric = ADDPGenerationMetric(reference=str(ref), feature_extractor=TinyFeatureNet(),
                                  isc_splits=2, save_dir=str(tmp_path / 'saved'))
    for start in (0, 3):
        samples = []
        for i in range(start, start + 3):
            ds = DataSample(metainfo=dict(sample_idx=i))
            ds.set_field(imgs[i], 'gen_img', dtype=torch.Tensor)
            samples.append(ds)
        metric.process({}, samples)
    res = metric.evaluate(6)
    assert abs(res['gen/fid']) < 1e-6 and res['gen/num_images'] == 6
    assert res['gen/is_mean'] >= 1.0
    saved = sorted(p.name for p in (tmp_path / 'saved').iterdir())
    assert saved == [f'{i:06d}.png' for i in range(6)]
    assert np.array_equal(np.array(Image.open(tmp_path / 'saved' / '000004.png')),
                          imgs[4].permute(1, 2, 0).numpy())
