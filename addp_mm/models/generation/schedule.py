"""Schedules and random choices of ADDP's iterative (alternating) sampler.

These helpers hold the parts of the reference ``engine_generate.py`` that do
not need the network (reference ``engine_generate.py``):

* the number of positions that stay masked after each step (cosine or linear
  schedule, ``ceil``, clipped to ``[1, #initially unknown]``),
* the choice temperature (linearly annealed ``τ·(1 − (s+1)/T)`` or static),
* token sampling (token temperature, nucleus/top-p) and Gumbel re-masking.

Every random draw goes through explicit ``torch.Generator`` objects, **one per
sample**, so a sample's result depends only on its own seed — not on the batch
it is in, the batch size or the number of processes — and runs on any device.
"""
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

SCHEDULES = ('cosine', 'linear')
TEMPERATURE_STRATEGIES = ('linear', 'static')

__all__ = [
    'SCHEDULES', 'TEMPERATURE_STRATEGIES', 'mask_ratio_at', 'num_masked_after_step',
    'masked_count_schedule', 'choice_temperature_at', 'make_generators',
    'uniform_noise', 'gumbel_noise', 'top_p_filter', 'sample_tokens', 'remask_by_confidence',
    'region_to_token_mask', 'check_sampler_settings', 'masked_counts'
]


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f'unknown mask schedule {schedule!r}; use one of {SCHEDULES}')


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(
            f'the number of sampling steps must be a positive integer, got {num_steps!r} '
            '(the release uses 20 cosine steps, or 256 linear steps for ViT-L)')


def check_sampler_settings(num_steps: int, schedule: str, choice_temperature: float,
                           temperature_strategy: str, token_temperature: float, top_p: float,
                           inpaint_init: str) -> None:
    """Raise ``ValueError`` naming the first invalid setting of an
    :class:`~addp_mm.models.generation.AlternatingDenoisingSampler`."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f'num_steps must be a positive integer, got {num_steps!r} '
                         '(the release uses 20, or 256 with the linear schedule)')
    if schedule not in SCHEDULES:
        raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
    if temperature_strategy not in TEMPERATURE_STRATEGIES:
        raise ValueError(f'temperature_strategy must be one of {TEMPERATURE_STRATEGIES}, '
                         f'got {temperature_strategy!r}')
    if choice_temperature < 0:
        raise ValueError(f'choice_temperature must be >= 0, got {choice_temperature}')
    if token_temperature <= 0:
        raise ValueError(f'token_temperature must be > 0, got {token_temperature}')
    if not 0. < top_p <= 1.:
        raise ValueError(f'top_p must be in (0, 1], got {top_p}')
    if inpaint_init not in ('soft_uniform', 'images'):
        raise ValueError(f"inpaint_init must be 'soft_uniform' or 'images', got {inpaint_init!r}")


def mask_ratio_at(step: int, num_steps: int, schedule: str = 'cosine') -> float:
    """Fraction of the sequence that stays masked after step ``step``.

    Args:
        step (int): Zero-based step index ``s`` in ``[0, num_steps)``.
        num_steps (int): Total number of steps ``T``.
        schedule (str): ``'cosine'`` gives ``cos(π/2·(s+1)/T)``, ``'linear'``
            gives ``1 − (s+1)/T``. Defaults to ``'cosine'``.

    Returns:
        float: The ratio in ``[0, 1]``.
    """
    _check_schedule(schedule)
    _check_steps(num_steps)
    if not 0 <= step < num_steps:
        raise ValueError(f'step {step} is outside [0, {num_steps})')
    step_ratio = 1. * (step + 1) / num_steps
    if schedule == 'cosine':
        return math.cos(math.pi / 2. * step_ratio)
    return 1. - step_ratio


def num_masked_after_step(step: int,
                          num_steps: int,
                          num_tokens: int,
                          schedule: str = 'cosine',
                          mask_ratio: float = 1.0,
                          max_masked: Optional[int] = None) -> int:
    """Number of positions that stay masked after step ``step``.

    ``L = ceil(num_tokens · ratio_s · mask_ratio)`` clipped to
    ``[1, floor(num_tokens · mask_ratio)]`` as in the reference, so the last
    step always keeps at least one (soft-embedded) position.

    Args:
        step (int): Zero-based step index.
        num_steps (int): Total number of steps.
        num_tokens (int): Length of the token sequence (``h·w``).
        schedule (str): ``'cosine'`` or ``'linear'``. Defaults to ``'cosine'``.
        mask_ratio (float): Fraction of the sequence that is unknown at the
            start (1.0 = unconditional generation). Defaults to 1.0.
        max_masked (int, optional): Upper clip; defaults to
            ``floor(num_tokens · mask_ratio)``. Pass the exact number of
            initially unknown positions when it is known (inpainting).

    Returns:
        int: The mask length, at least 1.
    """
    ratio = mask_ratio_at(step, num_steps, schedule)
    if max_masked is None:
        max_masked = int(num_tokens * mask_ratio)
    mask_len = math.ceil(num_tokens * ratio * mask_ratio)
    return int(min(max(mask_len, 1), max(max_masked, 1)))


def masked_counts(step: int, num_unknown: Tensor, num_tokens: int, num_steps: int,
                  schedule: str) -> Tensor:
    """:func:`num_masked_after_step` per sample (``[B]``, on ``num_unknown``'s
    device) for samples with ``num_unknown`` initially unknown positions."""
    cache: Dict[int, int] = {}
    out = []
    for n in num_unknown.tolist():
        n = int(n)
        if n not in cache:
            cache[n] = num_masked_after_step(step, num_steps, num_tokens, schedule,
                                             mask_ratio=n / num_tokens, max_masked=n)
        out.append(cache[n])
    return torch.tensor(out, dtype=torch.long, device=num_unknown.device)


def masked_count_schedule(num_steps: int,
                          num_tokens: int,
                          schedule: str = 'cosine',
                          mask_ratio: float = 1.0) -> List[int]:
    """Masked-position counts after steps ``0..num_steps-1``.

    For 20 cosine steps at 256 tokens this is
    ``[256, 253, 249, ..., 41, 21, 1]`` (reference ``engine_generate.py``).
    """
    _check_steps(num_steps)
    _check_schedule(schedule)
    return [
        num_masked_after_step(s, num_steps, num_tokens, schedule, mask_ratio)
        for s in range(num_steps)
    ]


def choice_temperature_at(step: int, num_steps: int, choice_temperature: float,
                          strategy: str = 'linear') -> float:
    """Gumbel temperature used for re-masking after step ``step``.

    Args:
        step (int): Zero-based step index.
        num_steps (int): Total number of steps.
        choice_temperature (float): Base temperature τ (6.0 in the release).
        strategy (str): ``'linear'`` anneals to ``τ·(1 − (s+1)/T)`` (the
            reference's default "dynamic" strategy); ``'static'`` keeps τ.
            Defaults to ``'linear'``.
    """
    if strategy not in TEMPERATURE_STRATEGIES:
        raise ValueError(f'unknown choice-temperature strategy {strategy!r}; '
                         f'use one of {TEMPERATURE_STRATEGIES}')
    if strategy == 'static':
        return float(choice_temperature)
    return float(choice_temperature) * (1. - 1. * (step + 1) / num_steps)


def make_generators(seeds: Sequence[int], device: Union[str, torch.device]) -> List[torch.Generator]:
    """One seeded ``torch.Generator`` per sample, on ``device``."""
    device = torch.device(device)
    gens = []
    for seed in seeds:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed) % (2**63))
        gens.append(gen)
    return gens


def uniform_noise(generators: Sequence[torch.Generator], shape: Sequence[int],
                  device: Union[str, torch.device]) -> Tensor:
    """Stack ``U[0,1)`` draws of ``shape``, one per generator -> ``[B, *shape]``."""
    return torch.stack([
        torch.rand(tuple(shape), generator=g, device=device, dtype=torch.float32)
        for g in generators
    ])


def gumbel_noise(generators: Sequence[torch.Generator], shape: Sequence[int],
                 device: Union[str, torch.device]) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``, one draw of ``shape`` per generator."""
    u = uniform_noise(generators, shape, device)
    tiny = torch.finfo(u.dtype).tiny
    u = u.clamp(min=tiny, max=1. - torch.finfo(u.dtype).eps)
    return -torch.log(-torch.log(u))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of ids whose mass reaches ``top_p``.

    Matches the reference ``nucleus_sampling``: ids are sorted by probability
    and an id is kept while the cumulative mass *before* it is below ``top_p``
    (so the most likely id is always kept).

    Args:
        logits (Tensor): ``[..., K]``.
        top_p (float): In ``(0, 1]``; 1.0 keeps everything.

    Returns:
        Tensor: log-probabilities ``[..., K]`` with ``-inf`` outside the nucleus.
    """
    if not 0. < top_p <= 1.:
        raise ValueError(f'top_p must be in (0, 1], got {top_p}')
    log_probs = F.log_softmax(logits.float(), dim=-1)
    if top_p >= 1.:
        return log_probs
    sorted_lp, order = torch.sort(log_probs, dim=-1, descending=True)
    cum = torch.cumsum(sorted_lp.exp(), dim=-1)
    keep_sorted = torch.cat([torch.ones_like(cum[..., :1], dtype=torch.bool),
                             cum[..., :-1] < top_p], dim=-1)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return log_probs.masked_fill(~keep, float('-inf'))


def sample_tokens(logits: Tensor, generators: Sequence[torch.Generator],
                  temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Draw one id per position from ``softmax(logits / temperature)``.

    Gumbel-max sampling (``argmax(log p + G)``) with per-sample generators; it
    is distributed exactly like ``Categorical(logits).sample()``.

    Args:
        logits (Tensor): ``[B, N, K]``.
        generators (Sequence[torch.Generator]): ``B`` generators.
        temperature (float): Token temperature (1.0 in the release).
            Defaults to 1.0.
        top_p (float): Nucleus threshold; 1.0 disables it. Defaults to 1.0.

    Returns:
        Tensor: Long ``[B, N]``.
    """
    if temperature <= 0:
        raise ValueError(f'token temperature must be > 0, got {temperature}')
    if len(generators) != logits.shape[0]:
        raise ValueError(f'{len(generators)} generators for a batch of {logits.shape[0]}')
    log_probs = top_p_filter(logits.float() / temperature, top_p)
    noise = gumbel_noise(generators, logits.shape[1:], logits.device)
    return torch.argmax(log_probs + noise, dim=-1)


def remask_by_confidence(confidence: Tensor, mask_len: Union[int, Tensor],
                         temperature: float,
                         generators: Optional[Sequence[torch.Generator]] = None) -> Tensor:
    """Choose the positions that stay masked: the ``mask_len`` lowest scores.

    The score is ``confidence + temperature · Gumbel`` (``confidence`` is the
    log-probability of the sampled id at unknown positions and ``+inf`` at
    known ones), as ``mask_by_random_topk`` in the reference.

    Args:
        confidence (Tensor): ``[B, N]`` float.
        mask_len (int | Tensor): Number to keep masked, scalar or ``[B]``.
        temperature (float): Choice temperature; with 0 no noise is drawn.
        generators (Sequence[torch.Generator], optional): ``B`` generators;
            required when ``temperature > 0``.

    Returns:
        Tensor: Bool ``[B, N]``, True = still masked; exactly ``mask_len[b]``
        per row.
    """
    B, N = confidence.shape
    score = confidence.double()
    if temperature > 0:
        if generators is None:
            raise ValueError('generators are required when the choice temperature is > 0')
        score = score + temperature * gumbel_noise(generators, (N, ), confidence.device).double()
    mask_len = torch.as_tensor(mask_len, device=confidence.device).long().reshape(-1)
    mask_len = mask_len.expand(B) if mask_len.numel() == 1 else mask_len
    # rank 0 = lowest score; stable so exact ties resolve to the lower position
    order = torch.argsort(score, dim=-1, stable=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(N, device=order.device).expand(B, N))
    return ranks < mask_len[:, None]


def region_to_token_mask(region: Tensor, grid_hw: Sequence[int]) -> Tensor:
    """Turn a region into a token mask (1 = regenerate).

    Args:
        region (Tensor): Either a token mask ``[B, h*w]`` / ``[B, h, w]`` or a
            pixel mask ``[B, H, W]`` / ``[B, 1, H, W]`` (any non-zero = inside
            the region). A token is regenerated when any pixel of its patch is
            inside the region.
        grid_hw (Sequence[int]): Token grid ``(h, w)``.

    Returns:
        Tensor: Bool ``[B, h*w]``.
    """
    h, w = grid_hw
    region = torch.as_tensor(region)
    if region.ndim == 4:
        if region.shape[1] != 1:
            raise ValueError(f'pixel region mask must be [B,1,H,W], got {tuple(region.shape)}')
        region = region[:, 0]
    if region.ndim == 2:
        if region.shape[1] != h * w:
            raise ValueError(f'token region mask has {region.shape[1]} positions, the grid has {h * w}')
        return region.bool()
    if region.ndim != 3:
        raise ValueError('region mask must be [B,N], [B,h,w], [B,H,W] or [B,1,H,W]; '
                         f'got {tuple(region.shape)}')
    if tuple(region.shape[1:]) == (h, w):
        return region.reshape(region.shape[0], -1).bool()
    H, W = region.shape[1:]
    if H % h or W % w:
        raise ValueError(f'pixel mask {H}x{W} is not a multiple of the token grid {h}x{w}')
    pooled = F.max_pool2d(region.float()[:, None].ne(0).float(), kernel_size=(H // h, W // w))
    return pooled.reshape(region.shape[0], -1).bool()
