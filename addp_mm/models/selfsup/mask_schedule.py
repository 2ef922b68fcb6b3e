"""ADDP's pretraining mask schedule (reference ``models_addp.py::random_masking``,
``modeling/utils.py::compute_mask_ratio_probs``).

Two nested token masks are drawn per iteration:

1. a cosine grid of ratios ``r_k = cos(pi/2 * k/num_grid)``, ``k = 0..num_grid``,
   restricted to ``[ratio_min, ratio_max)`` and sorted ascending (66 ratios,
   0.5090 ... 0.99988 for the official numbers);
2. each kept ratio is weighted by the pdf of a normal distribution
   ``N(mu, std²)`` truncated to ``[ratio_min, ratio_max]`` (the weights are
   normalised, so the truncation constant cancels and no scipy is needed);
3. **one** grid index ``i`` per batch (per process) is drawn from these weights;
   the step-t ratio is ``r[i]``; an offset ``δ ~ U{1..max_offset}`` gives the
   step-(t+1) ratio ``r[min(i + δ, last)]``;
4. the masked counts are ``ceil(num_tokens * ratio)`` (computed in float32 like
   the reference);
5. one uniform noise vector per sample serves both cut-offs: the ``n`` tokens
   with the smallest noise are masked, so ``mask_t ⊆ mask_t_next``.

All randomness goes through torch (optionally an explicit ``torch.Generator``),
so ``torch.manual_seed`` / mmengine's ``randomness.seed`` make it reproducible.
In training the masks come from torch's global generator, whose state
:class:`~addp_mm.engine.hooks.ADDPRandomStateHook` saves with each checkpoint,
so ``--resume`` draws the masks the uninterrupted run would have drawn.
The reference uses Python's ``random.randint`` for the offset and re-draws the
noise on exact ties; here the cut-off is taken by rank (``argsort``), which
gives the same distribution and always the exact count.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from addp_mm.registry import register_model


class ADDPNestedMaskGenerator:
    """Draw ADDP's nested ``(mask_t, mask_t_next)`` pair (reference ``random_masking``).

    Args:
        ratio_min (float): Smallest mask ratio kept on the grid (inclusive).
            Defaults to 0.5.
        ratio_max (float): Largest mask ratio (exclusive). Defaults to 1.0.
        ratio_mu (float): Mean of the truncated-normal weights. Defaults to 0.55.
        ratio_std (float): Std of the truncated-normal weights. Defaults to 0.25.
        num_grid (int): Number of cosine grid steps (``num_grid + 1`` points).
            Defaults to 100.
        max_offset (int): The t+1 ratio is ``offset ∈ {1..max_offset}`` grid
            points above the t ratio. Defaults to 5.
    """

    def __init__(self,
                 ratio_min: float = 0.5,
                 ratio_max: float = 1.0,
                 ratio_mu: float = 0.55,
                 ratio_std: float = 0.25,
                 num_grid: int = 100,
                 max_offset: int = 5) -> None:
        if not 0. <= ratio_min < ratio_max <= 1.:
            raise ValueError(f'need 0 <= ratio_min < ratio_max <= 1, got {ratio_min}, {ratio_max}')
        if ratio_std <= 0:
            raise ValueError(f'ratio_std must be positive, got {ratio_std}')
        if max_offset < 1:
            raise ValueError(f'max_offset must be >= 1, got {max_offset}')
        self.ratio_min = ratio_min
        self.ratio_max = ratio_max
        self.ratio_mu = ratio_mu
        self.ratio_std = ratio_std
        self.num_grid = num_grid
        self.max_offset = max_offset
        # cosine grid in float32, as the reference builds it (always on the CPU,
        # also when the model is built under a `torch.device('meta')` context)
        steps = torch.arange(num_grid + 1, dtype=torch.float32, device='cpu') / num_grid
        grid = torch.clamp(torch.cos(math.pi / 2. * steps), 0., 1.)
        keep = (grid >= ratio_min) & (grid < ratio_max)
        if not keep.any():
            raise ValueError(f'no cosine-grid ratio falls in [{ratio_min}, {ratio_max})')
        # descending grid -> ascending ratios
        self.ratios: Tensor = grid[keep].flip(0).contiguous()
        z = (self.ratios.double() - ratio_mu) / ratio_std
        pdf = torch.exp(-0.5 * z * z)  # truncation constant cancels on normalising
        self.probs: Tensor = pdf / pdf.sum()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ratio_min={self.ratio_min}, ratio_max={self.ratio_max}, '
                f'ratio_mu={self.ratio_mu}, ratio_std={self.ratio_std}, num_grid={self.num_grid}, '
                f'max_offset={self.max_offset}, num_ratios={len(self.ratios)})')

    def num_masked(self, ratio: Tensor, num_tokens: int) -> int:
        """``ceil(num_tokens * ratio)`` in float32 (the reference's rounding)."""
        return int(torch.ceil(torch.tensor(float(num_tokens), dtype=torch.float32, device='cpu') *
                              ratio.to('cpu', torch.float32)).item())

    def sample_indices(self, generator: Optional[torch.Generator] = None) -> Tuple[int, int]:
        """Draw the grid indices ``(i, min(i + δ, last))`` for one batch."""
        idx = int(torch.multinomial(self.probs, 1, generator=generator).item())
        offset = int(torch.randint(1, self.max_offset + 1, (1,), generator=generator,
                                   device='cpu').item())
        return idx, min(idx + offset, len(self.ratios) - 1)

    def sample_counts(self, num_tokens: int,
                      generator: Optional[torch.Generator] = None) -> Tuple[int, int]:
        """Draw the masked-token counts ``(n_t, n_t_next)`` for one batch."""
        idx, idx_next = self.sample_indices(generator)
        return (self.num_masked(self.ratios[idx], num_tokens),
                self.num_masked(self.ratios[idx_next], num_tokens))

    @staticmethod
    def masks_from_noise(noise: Tensor, num_masked: int) -> Tensor:
        """Mask (1.0) the ``num_masked`` positions of smallest noise per row."""
        rank = noise.argsort(dim=1).argsort(dim=1)
        return (rank < num_masked).to(torch.float32)

    def __call__(self,
                 batch_size: int,
                 num_tokens: int,
                 device: torch.device = torch.device('cpu'),
                 generator: Optional[torch.Generator] = None,
                 return_counts: bool = False) -> Tuple:
        """Draw one nested mask pair.

        Args:
            batch_size (int): Number of samples.
            num_tokens (int): Token-grid size ``h*w``.
            device (torch.device): Device of the returned masks.
                Defaults to CPU.
            generator (torch.Generator, optional): CPU generator for every
                random draw; the global torch RNG when None. Defaults to None.
            return_counts (bool): Also return the masked counts ``n_t`` and
                ``n_t_next`` (Python ints, the same for every sample).
                Defaults to False.

        Returns:
            tuple: ``mask_t`` and ``mask_t_next``, float32 ``[B, num_tokens]``
            with 1 = masked and ``mask_t <= mask_t_next`` (plus ``n_t``,
            ``n_t_next`` with ``return_counts``).
        """
        n_t, n_next = self.sample_counts(num_tokens, generator)
        noise = torch.rand(batch_size, num_tokens, generator=generator, device='cpu')
        pair = torch.stack([self.masks_from_noise(noise, n_t),
                            self.masks_from_noise(noise, n_next)])  # [2, B, N]
        device = torch.device(device)
        if device.type == 'cuda':
            # one asynchronous copy from pinned memory: the host does not wait for the device
            pair = pair.pin_memory().to(device, non_blocking=True)
        else:
            pair = pair.to(device)
        mask_t, mask_next = pair.unbind(0)
        if return_counts:
            return mask_t, mask_next, n_t, n_next
        return mask_t, mask_next


register_model(ADDPNestedMaskGenerator)

__all__ = ['ADDPNestedMaskGenerator']
