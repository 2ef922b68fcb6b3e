"""FID / IS arithmetic (the torch-fidelity formulation behind the reference's
numbers) and the ``.npz`` statistics files (``mu``, ``sigma``: the pytorch-fid
format), independent of any feature network.

Used by :mod:`addp_mm.evaluation.fid`, which re-exports every name.
"""
import os
import os.path as osp
from typing import Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ['feature_statistics', 'frechet_distance', 'inception_score', 'save_statistics',
           'load_statistics']


def feature_statistics(features: Union[Tensor, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``N-1``) covariance of ``[N, D]`` features, float64."""
    feats = features.detach().cpu().double().numpy() if isinstance(features, Tensor) \
        else np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f'features must be [N, D], got shape {feats.shape}')
    if feats.shape[0] < 2:
        raise ValueError(f'FID needs at least 2 images to estimate a covariance, got {feats.shape[0]}')
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``|mu1 − mu2|² + Tr(S1) + Tr(S2) − 2·Tr((S1·S2)^{1/2})``, where the last
    trace is the sum of the square roots of the eigenvalues of ``S1·S2`` (the
    torch-fidelity formulation, which needs no matrix square root).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f'statistics do not match: mu {mu1.shape} vs {mu2.shape}, '
                         f'sigma {sigma1.shape} vs {sigma2.shape} (were they computed with '
                         'the same feature network / layer?)')
    diff = mu1 - mu2
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)).real)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2. * tr_covmean)


def inception_score(logits: Union[Tensor, np.ndarray], splits: int = 10, shuffle: bool = True,
                    seed: int = 2020) -> Tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) ‖ p(y)))`` as mean ± std over splits.

    Args:
        logits (Tensor | ndarray): ``[N, C]`` class logits (torch-fidelity uses
            Inception's ``logits_unbiased``).
        splits (int): Number of splits. Defaults to 10.
        shuffle (bool): Shuffle the samples first. Defaults to True.
        seed (int): Seed of the shuffle (torch-fidelity's default). Defaults to 2020.

    Returns:
        tuple[float, float]: Mean and standard deviation over the splits.
    """
    logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, Tensor) else logits)
    logits = logits.detach().cpu().double()
    if logits.ndim != 2:
        raise ValueError(f'logits must be [N, C], got shape {tuple(logits.shape)}')
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f'cannot split {n} samples into {splits} IS splits; lower the split count')
    if shuffle:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p = logits.softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        sl = slice(i * n // splits, (i + 1) * n // splits)
        p_y = p[sl].mean(dim=0, keepdim=True)
        kl = (p[sl] * (log_p[sl] - p_y.log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray, num_images: int = -1) -> None:
    """Write FID statistics as ``.npz`` (``mu``, ``sigma``; pytorch-fid compatible)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, num_images=np.int64(num_images))


def load_statistics(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``mu``/``sigma`` from an ``.npz`` written by this module or pytorch-fid."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'reference statistics file not found: {path!r}')
    with np.load(path, allow_pickle=False) as data:
        if 'mu' not in data or 'sigma' not in data:
            raise ValueError(f'{path!r} has no "mu"/"sigma" arrays; create it with '
                             'tools/fid.py REF_FOLDER --save-stats FILE.npz')
        return data['mu'].astype(np.float64), data['sigma'].astype(np.float64)
