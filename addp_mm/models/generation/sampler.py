"""ADDP's alternating-denoising sampler (reference ``engine_generate.py``, ADDP paper Fig. 5).

Starting from an all-masked token map, every step

1. predicts the token distribution from the current pixels ``x_s`` and the
   reliable (known) tokens: ``logits = ADDP(x_s, z_s, m_s)``;
2. samples ids at the masked positions (token temperature, optional top-p);
3. scores them: ``log p(sampled)`` at masked positions, ``+inf`` at known ones;
4. keeps the ``L_s`` least confident positions masked, with Gumbel noise of
   temperature ``τ·(1 − (s+1)/T)`` (or a static τ), ``L_s = ceil(N·ratio_s)``
   clipped to ``[1, #unknown]``, ``ratio_s`` cosine or linear;
5. decodes the next pixels ``x_{s+1} = VQ-Dec(where(m, Σ_k p_k e_k, e(z)))``:
   soft (expected) codebook embeddings where still masked, hard ones elsewhere.

The output is the last ``x``; like the reference it keeps at least one soft
token. When every position is masked the ADDP decoder discards all encoder
features (only ``mask_token`` enters), so the pixels cannot matter: the
sampler then skips both the VQ decode that would produce them and the encoder
pass (the first two steps of a 20-step cosine run). ``skip_fully_masked=False``
turns that off; the results are identical (tested).

Randomness comes from one ``torch.Generator`` per sample, seeded
``seed + sample_idx``: a sample depends only on its index, not on the batch
or device count.
"""
import math
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.registry import register_model
from addp_mm.utils.pixels import images_to_uint8
from addp_mm.utils.precision import bf16_choice
from .schedule import (check_sampler_settings, choice_temperature_at, make_generators,
                       masked_counts, region_to_token_mask, remask_by_confidence,
                       sample_tokens)

__all__ = ['AlternatingDenoisingSampler', 'region_to_token_mask']


@register_model
class AlternatingDenoisingSampler(BaseModule):
    """Iterative token/pixel sampler for an ``ADDP`` model.

    It holds no weights; it drives the ADDP model passed to its methods
    through a small interface: ``model.num_tokens`` (``h·w``),
    ``model.num_codes`` (codebook size), ``model.predict_logits(x, tokens,
    mask)`` (``x`` may be None when every position is masked),
    ``model.tokens_to_pixels(tokens, probs, mask)`` and, for inpainting,
    ``model.tokenizer.encode`` / ``downsample_factor``. ``ADDP.predict``
    delegates here, so
    ``tools/test.py`` on a generation config samples and evaluates.

    Args:
        num_steps (int): Number of steps ``T``. Defaults to 20.
        schedule (str): ``'cosine'`` or ``'linear'`` mask schedule.
            Defaults to ``'cosine'``.
        choice_temperature (float): Gumbel temperature τ of re-masking.
            Defaults to 6.0.
        temperature_strategy (str): ``'linear'`` anneals τ to 0,
            ``'static'`` keeps it. Defaults to ``'linear'``.
        token_temperature (float): Temperature of the token sampling (and of
            the confidence of the sampled ids). The soft embeddings always use
            the model's own distribution. Defaults to 1.0.
        top_p (float): Nucleus sampling threshold; 1.0 disables it.
            Defaults to 1.0.
        seed (int): Base seed; sample ``i`` uses ``seed + i``. Defaults to 0.
        num_tokens (int, optional): Token sequence length ``h·w``; taken
            from ``model.num_tokens`` when None.
        skip_fully_masked (bool): Skip the encoder and the VQ decode while all
            positions are masked (the result cannot depend on them).
            Defaults to True.
        inpaint_init (str): Initial pixels for inpainting. ``'soft_uniform'``
            decodes the known tokens with the uniform-distribution soft
            embedding (the mean codebook vector) at the region, so nothing of
            the original region leaks; ``'images'`` feeds the input images as
            the reference's ``--mask_ratio < 1`` mode does (the encoder then
            sees the original pixels of the region). Defaults to
            ``'soft_uniform'``.
        precision (str, optional): Performance switch: autocast over each
            sampling run. None leaves the caller's setting (fp32 unless the
            caller autocasts); ``'bf16'`` runs under bf16 autocast (on a CPU
            without native bf16 it falls back to fp32 with a log line unless
            ``ADDP_BF16=1``); ``'auto'`` is bf16 on a GPU with bf16 support
            and the caller's setting elsewhere. The returned images are
            float32. Defaults to None.
        init_cfg (dict, optional): Unused (no weights). Defaults to None.
    """

    def __init__(self,
                 num_steps: int = 20,
                 schedule: str = 'cosine',
                 choice_temperature: float = 6.0,
                 temperature_strategy: str = 'linear',
                 token_temperature: float = 1.0,
                 top_p: float = 1.0,
                 seed: int = 0,
                 num_tokens: Optional[int] = None,
                 skip_fully_masked: bool = True,
                 inpaint_init: str = 'soft_uniform',
                 precision: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_sampler_settings(num_steps, schedule, choice_temperature, temperature_strategy,
                               token_temperature, top_p, inpaint_init)
        self.num_steps = num_steps
        self.schedule = schedule
        self.choice_temperature = float(choice_temperature)
        self.temperature_strategy = temperature_strategy
        self.token_temperature = float(token_temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.num_tokens = num_tokens
        self.skip_fully_masked = skip_fully_masked
        self.inpaint_init = inpaint_init
        self.set_precision(precision)

    def set_precision(self, precision: Optional[str]) -> None:
        """Set the ``precision`` switch (None, ``'bf16'`` or ``'auto'``)."""
        if precision not in (None, 'bf16', 'bfloat16', 'auto'):
            raise ValueError(f"precision must be None, 'bf16' or 'auto', got {precision!r}")
        self.precision = 'bf16' if precision == 'bfloat16' else precision

    def autocast_context(self, device_type: str):
        """The autocast context of :attr:`precision` on ``device_type``."""
        if self.precision is None:
            return nullcontext()
        if self.precision == 'auto':
            use = device_type == 'cuda' and bf16_choice('cuda', 'sampler precision=auto', log=False)
        else:
            use = bf16_choice(device_type, "sampler precision='bf16'")
        return torch.autocast(device_type, dtype=torch.bfloat16) if use else nullcontext()

    # ------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------
    @staticmethod
    def check_model(model: nn.Module) -> None:
        """Raise a clear error if ``model`` cannot generate."""
        missing = [name for name in ('num_tokens', 'num_codes', 'tokenizer', 'predict_logits',
                                     'tokens_to_pixels') if getattr(model, name, None) is None]
        if missing:
            raise TypeError(
                f'{type(model).__name__} cannot generate images: it has no {missing}. '
                'Generation needs the full ADDP pretraining model (encoder, decoder/neck and the '
                'VQGAN tokenizer) built from a configs/addp_gen/ config.')

    def get_num_tokens(self, model: nn.Module) -> int:
        """Token sequence length ``N`` (``h·w``)."""
        if self.num_tokens is not None:
            return int(self.num_tokens)
        if getattr(model, 'num_tokens', None) is None:
            raise ValueError('cannot infer the token count; set `num_tokens` of the sampler')
        return int(model.num_tokens)

    @staticmethod
    def _device(model: nn.Module) -> torch.device:
        param = next(iter(model.parameters()), None)
        return param.device if param is not None else torch.device('cpu')

    def predict_logits(self, model: nn.Module, x: Optional[Tensor], tokens: Tensor,
                       mask: Tensor) -> Tensor:
        """Codebook logits ``[B, N, K]`` from pixels, known tokens and mask.

        With ``x=None`` (allowed only when every position is masked) the
        encoder is skipped.
        """
        K = int(model.num_codes)
        if x is None and not bool(mask.bool().all()):
            raise ValueError('pixels can be omitted only when every position is masked')
        logits = model.predict_logits(x, tokens, mask.float())  # [B, N, V]
        return logits[..., :K].float()

    def mask_lengths(self, step: int, num_unknown: Tensor, num_tokens: int) -> Tensor:
        """``L_s`` per sample (``[B]``) for samples with ``num_unknown`` initially unknown positions."""
        return masked_counts(step, num_unknown, num_tokens, self.num_steps, self.schedule)

    def denoise_step(self,
                     model: nn.Module,
                     x: Optional[Tensor],
                     tokens: Tensor,
                     mask: Tensor,
                     step: int,
                     num_unknown: Tensor,
                     generators: Optional[Sequence[torch.Generator]] = None,
                     greedy: bool = False) -> Dict[str, Tensor]:
        """One step of the loop (without the pixel decode).

        Args:
            model (nn.Module): The ADDP model.
            x (Tensor, optional): Pixels ``[B, 3, H, W]``; None when all masked.
            tokens (Tensor): Current ids ``[B, N]`` (meaningful where ``mask`` is 0).
            mask (Tensor): ``[B, N]``, 1/True = masked.
            step (int): Step index ``s``.
            num_unknown (Tensor): ``[B]`` initially unknown counts (schedule scale).
            generators (Sequence[torch.Generator], optional): Per-sample
                generators; required unless ``greedy`` and τ = 0.
            greedy (bool): Take the argmax instead of sampling (used by the
                fixture parity test). Defaults to False.

        Returns:
            dict: ``logits [B,N,K]``, ``tokens`` (next ids), ``confidence``
            (``log p`` of the ids, ``+inf`` at known positions), ``mask``
            (bool, True = still masked).
        """
        mask = mask.bool()
        logits = self.predict_logits(model, x, tokens, mask)  # [B, N, K]
        if greedy:
            sampled = logits.argmax(dim=-1)
        else:
            sampled = sample_tokens(logits, generators, self.token_temperature, self.top_p)
        new_tokens = torch.where(mask, sampled, tokens)
        log_probs = F.log_softmax(logits / self.token_temperature, dim=-1)
        conf = log_probs.gather(-1, new_tokens[..., None])[..., 0]
        conf = torch.where(mask, conf.double(), torch.full_like(conf, math.inf, dtype=torch.float64))
        mask_len = self.mask_lengths(step, num_unknown, tokens.shape[1])
        tau = choice_temperature_at(step, self.num_steps, self.choice_temperature,
                                    self.temperature_strategy)
        mask_next = remask_by_confidence(conf, mask_len, tau, generators)
        return dict(logits=logits, tokens=new_tokens, confidence=conf, mask=mask_next)

    # ------------------------------------------------------------------
    # main loop
    # ------------------------------------------------------------------
    @torch.no_grad()
    def run(self,
            model: nn.Module,
            tokens: Tensor,
            mask: Tensor,
            seeds: Sequence[int],
            x: Optional[Tensor] = None,
            return_trajectory: bool = False,
            progress: bool = False) -> Dict[str, Union[Tensor, List]]:
        """Run the loop from a given state.

        Args:
            model (nn.Module): The ADDP model.
            tokens (Tensor): Initial ids ``[B, N]`` (known where ``mask`` is 0).
            mask (Tensor): Initial mask ``[B, N]``, 1/True = to generate. Every
                sample needs at least one masked position.
            seeds (Sequence[int]): One seed per sample.
            x (Tensor, optional): Initial pixels; required unless all masked.
            return_trajectory (bool): Also return per-step ``x`` (after each
                step, clamped, on CPU; None for skipped decodes) and masks.
                Defaults to False.
            progress (bool): Show a tqdm bar over steps. Defaults to False.

        Returns:
            dict: ``images`` ``[B,3,H,W]`` (not clamped), ``tokens`` ``[B,N]``,
            ``mask`` ``[B,N]`` (final, >= 1 soft position) and optionally
            ``trajectory`` (list of ``(x or None, mask)``).
        """
        self.check_model(model)
        mask = mask.bool()
        tokens = tokens.long()
        num_unknown = mask.sum(dim=1)
        if bool((num_unknown == 0).any()):
            raise ValueError('every sample needs at least one position to generate '
                             '(the region mask is empty for some sample)')
        if len(seeds) != tokens.shape[0]:
            raise ValueError(f'{len(seeds)} seeds for a batch of {tokens.shape[0]}')
        if x is None and not bool(mask.all()):
            raise ValueError('initial pixels are required when some tokens are known')
        counts = num_unknown.unique()
        if counts.numel() == 1:
            return self._run_group(model, tokens, mask, list(seeds), x, return_trajectory, progress)
        # ADDP's decoder needs the same number of visible tokens across a batch:
        # run each group of equally sized regions on its own and stitch.
        parts = []
        for c in counts.tolist():
            idx = (num_unknown == c).nonzero()[:, 0]
            sub = self._run_group(model, tokens[idx], mask[idx], [seeds[i] for i in idx.tolist()],
                                  None if x is None else x[idx], return_trajectory, progress)
            parts.append((idx, sub))
        result = {}
        for key in ('images', 'tokens', 'mask'):
            ref = parts[0][1][key]
            full = ref.new_empty((tokens.shape[0], *ref.shape[1:]))
            for idx, sub in parts:
                full[idx] = sub[key]
            result[key] = full
        if return_trajectory:
            traj = []
            for s in range(self.num_steps):
                xs = [sub['trajectory'][s][0] for _, sub in parts]
                m = torch.zeros(mask.shape, dtype=torch.bool)
                xfull = None
                if all(v is not None for v in xs):
                    xfull = xs[0].new_empty((tokens.shape[0], *xs[0].shape[1:]))
                for (idx, sub), xv in zip(parts, xs):
                    m[idx.cpu()] = sub['trajectory'][s][1]
                    if xfull is not None:
                        xfull[idx.cpu()] = xv
                traj.append((xfull, m))
            result['trajectory'] = traj
        return result

    def _run_group(self, model: nn.Module, tokens: Tensor, mask: Tensor, seeds: List[int],
                   x: Optional[Tensor], return_trajectory: bool, progress: bool) -> dict:
        """The loop for a batch whose samples all have the same number of unknown positions."""
        with self.autocast_context(tokens.device.type):
            out = self._run_group_loop(model, tokens, mask, seeds, x, return_trajectory, progress)
        out['images'] = out['images'].float()
        return out

    def _run_group_loop(self, model: nn.Module, tokens: Tensor, mask: Tensor, seeds: List[int],
                        x: Optional[Tensor], return_trajectory: bool, progress: bool) -> dict:
        num_unknown = mask.sum(dim=1)
        gens = make_generators(seeds, tokens.device)
        if self.skip_fully_masked and bool(mask.all()):
            x = None
        elif x is None:
            x = self._soft_pixels(model, tokens, None, mask)
        trajectory = []
        steps = range(self.num_steps)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc='sampling steps', leave=False)
        for s in steps:
            out = self.denoise_step(model, x, tokens, mask, s, num_unknown, gens)
            tokens, mask = out['tokens'], out['mask']
            probs = out['logits'].softmax(dim=-1)  # [B, N, K], the model's own distribution
            last = s == self.num_steps - 1
            if last or not (self.skip_fully_masked and bool(mask.all())):
                x = model.tokens_to_pixels(tokens, probs, mask.float())  # [B, 3, H, W]
            else:
                x = None  # all masked: the next prediction ignores the pixels
            if return_trajectory:
                trajectory.append((None if x is None else x.detach().clamp(0, 1).cpu(),
                                   mask.detach().cpu()))
        result = dict(images=x, tokens=tokens, mask=mask)
        if return_trajectory:
            result['trajectory'] = trajectory
        return result

    def _soft_pixels(self, model: nn.Module, tokens: Tensor, probs: Optional[Tensor],
                     mask: Tensor) -> Tensor:
        """Decode with uniform soft embeddings at masked positions."""
        if probs is None:
            K = int(model.num_codes)
            probs = tokens.new_full((*tokens.shape, K), 1. / K, dtype=torch.float32)
        return model.tokens_to_pixels(tokens, probs, mask.float())

    def sample(self,
               model: nn.Module,
               num_samples: Optional[int] = None,
               seeds: Optional[Sequence[int]] = None,
               return_trajectory: bool = False,
               progress: bool = False) -> Dict[str, Union[Tensor, List]]:
        """Unconditional generation of a batch.

        Args:
            model (nn.Module): The ADDP model (eval mode is the caller's job).
            num_samples (int, optional): Batch size; seeds become
                ``self.seed + 0..num_samples-1``.
            seeds (Sequence[int], optional): Explicit per-sample seeds.
            return_trajectory (bool): See :meth:`run`. Defaults to False.
            progress (bool): Defaults to False.
        """
        if seeds is None:
            if num_samples is None or num_samples < 1:
                raise ValueError('give num_samples >= 1 or explicit seeds')
            seeds = [self.seed + i for i in range(num_samples)]
        self.check_model(model)
        device = self._device(model)
        B, N = len(seeds), self.get_num_tokens(model)
        tokens = torch.zeros(B, N, dtype=torch.long, device=device)
        mask = torch.ones(B, N, dtype=torch.bool, device=device)
        return self.run(model, tokens, mask, seeds, None, return_trajectory, progress)

    @torch.no_grad()
    def inpaint(self,
                model: nn.Module,
                images: Tensor,
                region: Tensor,
                seeds: Optional[Sequence[int]] = None,
                return_trajectory: bool = False,
                progress: bool = False) -> Dict[str, Union[Tensor, List]]:
        """Regenerate ``region`` of ``images`` and keep the tokens outside it.

        Args:
            model (nn.Module): The ADDP model.
            images (Tensor): ``[B, 3, H, W]`` in ``[0, 1]``.
            region (Tensor): Region to regenerate, as a token mask ``[B, N]`` /
                ``[B, h, w]`` or a pixel mask ``[B, (1,) H, W]``.
            seeds (Sequence[int], optional): Defaults to ``self.seed + i``.
            return_trajectory (bool): Defaults to False.
            progress (bool): Defaults to False.

        Returns:
            dict: As :meth:`run`, plus ``known_tokens`` and ``region``
            (bool ``[B, N]``). ``tokens`` equals ``known_tokens`` outside
            ``region`` exactly.
        """
        self.check_model(model)
        device = self._device(model)
        images = images.to(device).float()
        known, _ = model.tokenizer.encode(images)  # [B, N]
        N = known.shape[1]
        f = int(model.tokenizer.downsample_factor)
        grid = (images.shape[-2] // f, images.shape[-1] // f)
        if grid[0] * grid[1] != N:
            raise ValueError(f'tokenizer returned {N} tokens for a {grid} grid')
        region = region_to_token_mask(region.to(device), grid)
        if region.shape[0] != images.shape[0]:
            raise ValueError(f'{region.shape[0]} region masks for {images.shape[0]} images')
        seeds = [self.seed + i for i in range(images.shape[0])] if seeds is None else seeds
        if bool(region.all()) and self.skip_fully_masked:
            x0 = None
        elif self.inpaint_init == 'images':
            x0 = images
        else:
            x0 = self._soft_pixels(model, known, None, region)
        out = self.run(model, known, region, seeds, x0, return_trajectory, progress)
        out['known_tokens'] = known
        out['region'] = region
        return out

    # ------------------------------------------------------------------
    # mmengine test loop entry (ADDP.predict delegates here)
    # ------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: Optional[Tensor] = None,
                data_samples: Optional[list] = None) -> list:
        """Generate one image per data sample (the inputs are not used).

        Sample ``i`` (``metainfo['sample_idx']``) is seeded ``self.seed + i``.

        Returns:
            list[DataSample]: With ``gen_img`` (uint8 ``[3, H, W]``, RGB, as
            saved to PNG) and ``gen_tokens`` (``[N]``).
        """
        from mmpretrain.structures import DataSample
        if data_samples is None:
            if inputs is None:
                raise ValueError('predict needs inputs or data_samples to know the batch size')
            data_samples = [DataSample(metainfo=dict(sample_idx=i)) for i in range(len(inputs))]
        seeds = [self.seed + int(ds.metainfo.get('sample_idx', i)) for i, ds in enumerate(data_samples)]
        out = self.sample(model, seeds=seeds)
        imgs = images_to_uint8(out['images'])
        for ds, img, tok in zip(data_samples, imgs, out['tokens']):
            ds.set_field(img.cpu(), 'gen_img', dtype=Tensor)
            ds.set_field(tok.cpu(), 'gen_tokens', dtype=Tensor)
        return data_samples
