"""Training the VQGAN tokenizer (for new domains and for the embedded demo).

References:
    - VQ-VAE: van den Oord et al., "Neural Discrete Representation Learning",
      NeurIPS 2017 (codebook + commitment losses, straight-through estimator).
    - VQGAN: Esser et al., "Taming Transformers for High-Resolution Image
      Synthesis", CVPR 2021 (perceptual + patch-adversarial losses, hinge
      loss, adaptive adversarial weight).
    - MaskGIT / MAGE: the tokenizer architecture trained here
      (:class:`~addp_mm.models.tokenizers.VQGANTokenizer`).
    - Dead-code restarts: Dhariwal et al., "Jukebox", 2020 (random restart
      of unused codes from encoder outputs).

:class:`VQGANTrainer` wraps a :class:`VQGANTokenizer` (``self.tokenizer``)
and trains it with::

    h   = Enc(x)                        # [B, C, h, w]
    q   = codebook[argmin_k ||h - e_k||] # nearest code (fp32)
    z   = h + sg(q - h)                 # straight-through estimator
    x'  = Dec(z)
    L   = w_rec   * |x - x'|_1 (or squared L2)
        + w_cb    * mean ||sg(h) - q||^2        # codebook loss
        + w_com   * mean ||h - sg(q)||^2        # commitment loss (beta)
        + w_perc  * perceptual(x, x')           # optional (VGG16 features)
        + lambda  * (-mean D(x'))               # optional, hinge generator loss

and, when a discriminator is configured, a second optimizer step on the
hinge discriminator loss ``mean relu(1 - D(x)) + mean relu(1 + D(sg(x')))``.

**Checkpoint format.** The tokenizer lives under ``tokenizer.`` in the Runner
checkpoints this algorithm writes, so ``iter_N.pth`` is directly loadable as
``VQGANTokenizer(checkpoint='.../iter_N.pth')`` (the tokenizer detects the
``tokenizer.`` prefix and reads only those keys; everything else, e.g. the
discriminator, is ignored). This is the path the ADDP and token-predictor
configs use. ``tools/model_converters/vqgan_to_mm.py CKPT OUT --config CFG``
writes a small stand-alone file (official key names) when one is preferred.

**Dead codes.** A randomly initialised codebook far from the encoder outputs
leaves most codes unused. Two documented remedies are available:

* ``codebook_init='data'`` (default): at the first training step every code
  is set to a randomly chosen encoder output of that batch (a one-shot
  "k-means++-lite" initialisation). Skipped when the tokenizer starts from a
  ``checkpoint`` (fine-tuning keeps its codebook).
* ``dead_code_restart=dict(interval=..., threshold=..., decay=...)``: an
  exponential moving average of the per-code usage frequency is kept; every
  ``interval`` training steps each code whose average usage is below
  ``threshold / num_embeddings`` is moved onto a random encoder output of the
  current batch. Usage and restarts are synchronised across processes
  (usage all-reduced, new codes broadcast from rank 0).
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, broadcast
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.registry import MODELS
from torch import Tensor

from addp_mm.models.losses.vqgan_losses import hinge_d_loss, vq_losses
from addp_mm.registry import register_model
from addp_mm.utils.pixels import unit_rgb_preprocessor

__all__ = ['VQGANTrainer']


def _as_batch(inputs: Union[Tensor, List[Tensor]]) -> Tensor:
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 1 and isinstance(inputs[0], Tensor) and inputs[0].dim() == 4:
            return inputs[0]
        return torch.stack(list(inputs))
    return inputs


# ---------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------
@register_model
class VQGANTrainer(BaseModel):
    """Train a :class:`VQGANTokenizer` (see the module docstring).

    Args:
        tokenizer (dict): ``VQGANTokenizer`` config. Its ``checkpoint`` may
            point at existing tokenizer weights to fine-tune them on a new
            domain. Parameters are made trainable here.
        rec_loss (str): ``'l1'`` or ``'l2'`` (mean squared error).
            Defaults to ``'l1'``.
        rec_weight (float): Weight of the reconstruction loss. Defaults to 1.
        codebook_weight (float): Weight of the codebook loss. Defaults to 1.
        commitment_weight (float): Weight ``beta`` of the commitment loss.
            Defaults to 0.25.
        perceptual_loss (dict, optional):
            :class:`~addp_mm.models.losses.VQGANPerceptualLoss` config
            (``checkpoint`` = local VGG16 weights). Defaults to None (off).
        perceptual_weight (float): Its weight. Defaults to 1.
        discriminator (dict, optional):
            :class:`~addp_mm.models.losses.VQGANPatchDiscriminator` config;
            enables the adversarial loss, which needs the
            ``VQGANMultiOptimWrapperConstructor`` (keys ``tokenizer`` and
            ``discriminator``). Defaults to None (off).
        adv_weight (float): Weight of the generator hinge loss. Defaults to 0.1.
        adaptive_adv_weight (bool): Scale it by ``||grad rec|| / ||grad adv||``
            at the decoder's last layer (taming). Defaults to True.
        disc_start_iter (int): Training step from which the adversarial terms
            are used. Defaults to 0.
        codebook_init (str): ``'data'`` (codes set to encoder outputs at the
            first step, unless ``tokenizer.checkpoint`` is set) or ``'none'``.
            Defaults to ``'data'``.
        dead_code_restart (dict, optional): ``dict(interval, threshold,
            decay)`` (see the module docstring); None disables restarts.
            Defaults to ``dict(interval=50, threshold=0.03, decay=0.9)``.
        data_preprocessor (dict, optional): Defaults to a
            ``SelfSupDataPreprocessor`` giving RGB images in [0, 1].
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 tokenizer: dict,
                 rec_loss: str = 'l1',
                 rec_weight: float = 1.,
                 codebook_weight: float = 1.,
                 commitment_weight: float = 0.25,
                 perceptual_loss: Optional[dict] = None,
                 perceptual_weight: float = 1.,
                 discriminator: Optional[dict] = None,
                 adv_weight: float = 0.1,
                 adaptive_adv_weight: bool = True,
                 disc_start_iter: int = 0,
                 codebook_init: str = 'data',
                 dead_code_restart: Optional[dict] = dict(interval=50, threshold=0.03, decay=0.9),
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = unit_rgb_preprocessor()
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if rec_loss not in ('l1', 'l2'):
            raise ValueError(f"rec_loss must be 'l1' or 'l2', got {rec_loss!r}")
        if codebook_init not in ('data', 'none'):
            raise ValueError(f"codebook_init must be 'data' or 'none', got {codebook_init!r}")
        self.tokenizer = MODELS.build(tokenizer) if isinstance(tokenizer, dict) else tokenizer
        for attr in ('encoder', 'decoder', 'quantize_latents', 'codebook'):
            if not hasattr(self.tokenizer, attr):
                raise TypeError(f'tokenizer {type(self.tokenizer).__name__} has no {attr!r}; '
                                "VQGANTrainer trains a VQGANTokenizer (type='VQGANTokenizer').")
        self._unfreeze_tokenizer()
        self.rec_loss = rec_loss
        self.rec_weight = rec_weight
        self.codebook_weight = codebook_weight
        self.commitment_weight = commitment_weight
        self.perceptual_weight = perceptual_weight
        self.perceptual_loss = MODELS.build(
            dict(dict(type='VQGANPerceptualLoss'), **perceptual_loss)) \
            if isinstance(perceptual_loss, dict) else perceptual_loss
        self.discriminator = MODELS.build(
            dict(dict(type='VQGANPatchDiscriminator'), **discriminator)) \
            if isinstance(discriminator, dict) else discriminator
        self.adv_weight = adv_weight
        self.adaptive_adv_weight = adaptive_adv_weight
        self.disc_start_iter = disc_start_iter
        self.codebook_init = codebook_init
        if dead_code_restart is not None:
            unknown = set(dead_code_restart) - {'interval', 'threshold', 'decay'}
            if unknown:
                raise KeyError(f'dead_code_restart got unknown keys {sorted(unknown)}; '
                               'use interval, threshold, decay')
            dead_code_restart = dict(dict(interval=50, threshold=0.03, decay=0.9),
                                     **dead_code_restart)
        self.dead_code_restart = dead_code_restart
        K = self.tokenizer.num_embeddings
        # persistent so that resuming continues the statistics
        self.register_buffer('code_usage', torch.full((K, ), 1. / K))
        self.register_buffer('num_steps', torch.zeros((), dtype=torch.long))
        self.register_buffer('num_restarted', torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ setup
    def _unfreeze_tokenizer(self) -> None:
        for p in self.tokenizer.parameters():
            p.requires_grad_(True)

    def init_weights(self) -> None:
        """Init children (loads ``tokenizer.checkpoint`` / perceptual weights
        when given) and make the tokenizer trainable again."""
        super().init_weights()
        self._unfreeze_tokenizer()

    # ---------------------------------------------------------------- codebook
    @torch.no_grad()
    def _set_codes(self, code_ids: Tensor, flat_latents: Tensor) -> None:
        """Move ``code_ids`` onto random rows of ``flat_latents`` (rank 0's
        choice is broadcast so all processes stay identical)."""
        if code_ids.numel() == 0:
            return
        pick = torch.randint(0, flat_latents.shape[0], (code_ids.numel(), ),
                             device=flat_latents.device)
        new = flat_latents[pick].to(self.tokenizer.codebook.dtype)
        broadcast(new, 0)
        self.tokenizer.codebook.data[code_ids] = new

    @torch.no_grad()
    def _maintain_codebook(self, latents: Tensor) -> None:
        """Data init at the first step and periodic dead-code restarts."""
        flat = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float()
        K = self.tokenizer.num_embeddings
        pretrained = getattr(self.tokenizer, 'checkpoint', None) is not None
        if self.codebook_init == 'data' and int(self.num_steps) == 0 and not pretrained:
            self._set_codes(torch.arange(K, device=flat.device), flat)
            return
        cfg = self.dead_code_restart
        step = int(self.num_steps)
        if cfg and step > 0 and step % int(cfg['interval']) == 0:
            dead = (self.code_usage < float(cfg['threshold']) / K).nonzero().flatten()
            self._set_codes(dead, flat)
            self.code_usage[dead] = 1. / K
            self.num_restarted += dead.numel()

    @torch.no_grad()
    def _update_usage(self, indices: Tensor) -> Tensor:
        K = self.tokenizer.num_embeddings
        counts = torch.bincount(indices.flatten(), minlength=K).float()
        all_reduce(counts)
        freq = counts / counts.sum().clamp_min(1.)
        decay = float(self.dead_code_restart['decay']) if self.dead_code_restart else 0.9
        self.code_usage.mul_(decay).add_(freq, alpha=1. - decay)
        return freq

    # ----------------------------------------------------------------- forward
    def reconstruct(self, images: Tensor) -> Dict[str, Tensor]:
        """Encode, quantise (straight-through) and decode.

        Args:
            images (Tensor): ``[B, 3, H, W]`` in [0, 1].

        Returns:
            dict[str, Tensor]: ``rec`` ``[B, 3, H, W]``, ``latents`` ``h``,
            ``quant`` ``q`` (both ``[B, C, h, w]``), ``indices`` ``[B, h*w]``,
            ``loss_codebook`` and ``loss_commit`` (unweighted).
        """
        self.tokenizer._check_images(images)
        latents = self.tokenizer.encoder(images)  # [B, C, h, w]
        if self.training and torch.is_grad_enabled():
            self._maintain_codebook(latents)
        indices = self.tokenizer.quantize_latents(latents)  # [B, h*w]
        B, C, gh, gw = latents.shape
        quant = F.embedding(indices, self.tokenizer.codebook)  # [B, N, C]
        quant = quant.transpose(1, 2).reshape(B, C, gh, gw)
        codebook, commitment, st = vq_losses(latents, quant)
        rec = self.tokenizer.decoder(st)  # [B, 3, H, W]
        return dict(rec=rec, latents=latents, quant=quant, indices=indices,
                    loss_codebook=codebook, loss_commit=commitment)

    def _rec_loss(self, rec: Tensor, images: Tensor) -> Tensor:
        if self.rec_loss == 'l1':
            return (rec - images).abs().mean()
        return F.mse_loss(rec, images)

    def _adv_active(self) -> bool:
        return self.discriminator is not None and int(self.num_steps) >= self.disc_start_iter

    def _adaptive_weight(self, rec_term: Tensor, g_loss: Tensor) -> Tensor:
        last = self.tokenizer.decoder.conv_out.weight
        g_rec = torch.autograd.grad(rec_term, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        w = g_rec.norm() / (g_adv.norm() + 1e-4)
        return w.clamp(0., 1e4).detach()

    def generator_losses(self, images: Tensor) -> Tuple[Dict[str, Tensor], Tensor]:
        """All tokenizer-side losses (weighted) plus monitoring values.

        Args:
            images (Tensor): ``[B, 3, H, W]`` in [0, 1].

        Returns:
            tuple: ``(losses, rec)``; keys with ``loss`` are summed by
            ``parse_losses``; ``usage`` (fraction of codes used in the batch)
            and ``perplexity`` are logged only.
        """
        out = self.reconstruct(images)
        rec = out['rec']
        losses = dict(
            loss_rec=self.rec_weight * self._rec_loss(rec, images),
            loss_codebook=self.codebook_weight * out['loss_codebook'],
            loss_commit=self.commitment_weight * out['loss_commit'])
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            losses['loss_perceptual'] = self.perceptual_weight * self.perceptual_loss(rec, images)
        if self.training and self._adv_active():
            self.discriminator.requires_grad_(False)  # no D gradients from the G step
            g_loss = -self.discriminator(rec).mean()
            self.discriminator.requires_grad_(True)
            weight = torch.as_tensor(self.adv_weight, device=rec.device)
            if self.adaptive_adv_weight:
                rec_term = losses['loss_rec'] + losses.get('loss_perceptual', 0.)
                weight = weight * self._adaptive_weight(rec_term, g_loss)
            losses['loss_adv'] = weight * g_loss
        if self.training:
            freq = self._update_usage(out['indices'])
            self.num_steps += 1
        else:
            freq = torch.bincount(out['indices'].flatten(),
                                  minlength=self.tokenizer.num_embeddings).float()
            freq = freq / freq.sum().clamp_min(1.)
        losses['usage'] = (freq > 0).float().mean()
        losses['perplexity'] = torch.exp(-(freq * (freq + 1e-10).log()).sum())
        return losses, rec

    def loss(self, inputs: Union[Tensor, List[Tensor]], data_samples: Optional[list] = None,
             **kwargs) -> Dict[str, Tensor]:
        """Tokenizer losses of a batch of [0, 1] images (no discriminator
        update; :meth:`train_step` does that when one is configured)."""
        losses, _ = self.generator_losses(_as_batch(inputs))
        return losses

    def forward(self, inputs: Union[Tensor, List[Tensor]], data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``'loss'``: :meth:`loss`; ``'tensor'`` / ``'predict'``:
        reconstructions ``[B, 3, H, W]`` (not clamped)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('tensor', 'predict'):
            return self.reconstruct(_as_batch(inputs))['rec']
        raise RuntimeError(f'Invalid mode "{mode}" for VQGANTrainer')

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: Union[OptimWrapper, OptimWrapperDict]) -> Dict[str, Tensor]:
        """One update; with a discriminator, a generator step then a
        discriminator step (two optimizers)."""
        if self.discriminator is None:
            if isinstance(optim_wrapper, OptimWrapperDict):
                raise TypeError('without a discriminator use a single optimizer '
                                '(optim_wrapper=dict(optimizer=...)).')
            return super().train_step(data, optim_wrapper)
        if not isinstance(optim_wrapper, OptimWrapperDict) or \
                set(optim_wrapper.keys()) != {'tokenizer', 'discriminator'}:
            raise TypeError(
                'the adversarial loss needs two optimizers: optim_wrapper=dict('
                "constructor='VQGANMultiOptimWrapperConstructor', tokenizer=dict(...), "
                'discriminator=dict(...)).')
        g_wrapper, d_wrapper = optim_wrapper['tokenizer'], optim_wrapper['discriminator']
        data = self.data_preprocessor(data, True)
        images = _as_batch(data['inputs'])
        with g_wrapper.optim_context(self.tokenizer):
            losses, rec = self.generator_losses(images)
        parsed, log_vars = self.parse_losses(losses)
        g_wrapper.update_params(parsed)
        if int(self.num_steps) - 1 >= self.disc_start_iter:
            with d_wrapper.optim_context(self.discriminator):
                d_loss = hinge_d_loss(self.discriminator(images),
                                      self.discriminator(rec.detach()))
            d_wrapper.update_params(d_loss)
            log_vars['loss_disc'] = d_loss.detach()
        return log_vars
