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
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, broadcast
from mmengine.model import BaseModel, BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper, OptimWrapperDict
from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from torch import Tensor, nn

from addp_mm.models.utils.pixels import IMAGENET_MEAN, IMAGENET_STD, unit_rgb_preprocessor
from addp_mm.registry import register_model
from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                      load_external_state_dict)

__all__ = [
    'VQGANTrainer', 'VQGANPatchDiscriminator', 'VQGANPerceptualLoss',
    'VQGANMultiOptimWrapperConstructor', 'vq_losses', 'hinge_d_loss'
]



def vq_losses(latents: Tensor, quant: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Codebook loss, commitment loss and straight-through latents.

    Args:
        latents (Tensor): Encoder output ``h`` ``[B, C, h, w]``.
        quant (Tensor): Selected codebook vectors ``q`` of the same shape
            (differentiable w.r.t. the codebook).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``codebook = mean((sg(h) - q)^2)``
        (moves the codes), ``commitment = mean((h - sg(q))^2)`` (unweighted;
        moves the encoder) and ``h + sg(q - h)`` (value ``q``, gradient to
        ``h``).
    """
    if latents.shape != quant.shape:
        raise ValueError(f'latents {tuple(latents.shape)} and quant {tuple(quant.shape)} '
                         'must have the same shape')
    codebook = F.mse_loss(quant, latents.detach())
    commitment = F.mse_loss(latents, quant.detach())
    st = latents + (quant - latents).detach()
    return codebook, commitment, st


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge discriminator loss ``mean relu(1-D(x)) + mean relu(1+D(x'))``
    (halved, as in taming-transformers)."""
    return 0.5 * (F.relu(1. - logits_real).mean() + F.relu(1. + logits_fake).mean())


def _as_batch(inputs: Union[Tensor, List[Tensor]]) -> Tensor:
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 1 and isinstance(inputs[0], Tensor) and inputs[0].dim() == 4:
            return inputs[0]
        return torch.stack(list(inputs))
    return inputs


# ---------------------------------------------------------------------------
# Optional loss networks
# ---------------------------------------------------------------------------
@register_model
class VQGANPatchDiscriminator(BaseModule):
    """PatchGAN discriminator (taming's ``NLayerDiscriminator`` layout).

    ``conv4x4/2 → LReLU → [conv4x4/2 → GN → LReLU] × (num_layers-1) →
    conv4x4/1 → GN → LReLU → conv4x4/1 → 1 channel``. GroupNorm replaces
    taming's BatchNorm so real and fake batches are normalised
    independently of each other and of the batch size.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        base_channels (int): Width of the first layer. Defaults to 64.
        num_layers (int): Stride-2 layers. Defaults to 3.
        max_mult (int): Cap of the channel multiplier. Defaults to 8.
        norm_num_groups (int): GroupNorm groups. Defaults to 8.
        init_cfg (dict, optional): Defaults to None (N(0, 0.02) convs, as
            taming's ``weights_init``).
    """

    def __init__(self,
                 in_channels: int = 3,
                 base_channels: int = 64,
                 num_layers: int = 3,
                 max_mult: int = 8,
                 norm_num_groups: int = 8,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, max_mult)
            stride = 2 if n < num_layers else 1
            width = base_channels * mult
            if width % norm_num_groups:
                raise ValueError(f'discriminator width {width} not divisible by '
                                 f'norm_num_groups={norm_num_groups}')
            layers += [
                nn.Conv2d(base_channels * prev, width, 4, stride, 1, bias=False),
                nn.GroupNorm(norm_num_groups, width),
                nn.LeakyReLU(0.2, True)
            ]
        layers.append(nn.Conv2d(base_channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)

    def init_weights(self) -> None:
        super().init_weights()
        if self.init_cfg is None:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0., 0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` images in [0, 1] → patch logits ``[B, 1, h', w']``."""
        return self.main(images * 2. - 1.)


@register_model
class VQGANPerceptualLoss(BaseModule):
    """Perceptual distance on frozen VGG16 features (LPIPS without its learned
    linear calibration layers).

    ``d(x, y) = sum_l mean_{c,h,w} (n(f_l(x)) - n(f_l(y)))^2`` with ``n`` the
    unit-normalisation along channels and ``f_l`` the VGG16 ``features``
    outputs at ``layer_ids`` (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 by
    default). Inputs in [0, 1] are ImageNet-normalised first.

    The weights are **never downloaded**: ``checkpoint`` must be a local file
    holding a torchvision VGG16 state dict (``features.N.weight`` keys, the
    ``classifier.*`` part is ignored) or just the ``features`` part
    (``N.weight`` keys), e.g. saved once with
    ``torch.save(torchvision.models.vgg16(weights='DEFAULT').state_dict(), path)``
    on a machine with internet access. It is read with ``weights_only=True`` in
    :meth:`init_weights`.

    Args:
        checkpoint (str): Path of the VGG16 weights.
        layer_ids (Sequence[int]): Indices in ``vgg16().features`` whose outputs
            are compared. Defaults to ``(3, 8, 15, 22, 29)``.
        init_cfg (dict, optional): Defaults to None.

    Raises:
        FileNotFoundError: If ``checkpoint`` is not given or does not exist.
    """

    def __init__(self,
                 checkpoint: Optional[str],
                 layer_ids: Sequence[int] = (3, 8, 15, 22, 29),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not checkpoint or not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'perceptual loss weights not found: {checkpoint!r}. The perceptual loss needs '
                'a local VGG16 state dict (nothing is downloaded): save one with `torch.save('
                "torchvision.models.vgg16(weights='DEFAULT').state_dict(), 'vgg16.pth')` where "
                'internet is available and set model.perceptual_loss.checkpoint to it, or set '
                'model.perceptual_loss=None (and perceptual_weight=0).')
        from torchvision.models import vgg16
        self.checkpoint = checkpoint
        self.layer_ids = tuple(sorted(int(i) for i in layer_ids))
        self.features = vgg16(weights=None).features[:self.layer_ids[-1] + 1]
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> 'VQGANPerceptualLoss':
        """Always eval mode (frozen)."""
        return super().train(False)

    def init_weights(self) -> None:
        """Load the VGG16 weights from ``checkpoint`` (strict key/shape check)."""
        super().init_weights()
        sd = load_external_state_dict(self.checkpoint, keys=('state_dict', 'model'))
        if any(k.startswith('features.') for k in sd):
            sd = {k[len('features.'):]: v for k, v in sd.items() if k.startswith('features.')}
        # layers after the last compared one are not built: drop their weights
        own = self.features.state_dict()
        sd = {k: v for k, v in sd.items()
              if k in own or not (k.split('.')[0].isdigit()
                                  and int(k.split('.')[0]) > self.layer_ids[-1])}
        try:
            check_state_dict(self.features, sd, source=repr(self.checkpoint))
        except CheckpointError as err:
            raise CheckpointError(f'{err} (expected a torchvision VGG16 state dict)') from err
        self.features.load_state_dict(sd, strict=True)
        self._freeze()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Perceptual distance between ``x`` and ``y`` (``[B, 3, H, W]`` in [0, 1])."""
        h = torch.cat([x, y], dim=0)
        h = (h - self.mean.to(h)) / self.std.to(h)
        loss = h.new_zeros(())
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.layer_ids:
                f = h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fx, fy = f.chunk(2, dim=0)
                loss = loss + (fx - fy).pow(2).sum(1).mean()
        return loss


# ---------------------------------------------------------------------------
# Optimizer constructor for the adversarial variant
# ---------------------------------------------------------------------------
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VQGANMultiOptimWrapperConstructor:
    """Build one optimizer wrapper per sub-module (an ``OptimWrapperDict``).

    Each key of the config other than ``constructor``/``paramwise_cfg`` names
    an attribute of the model (``tokenizer``, ``discriminator``) and holds an
    ordinary optim-wrapper config built with mmengine's
    ``DefaultOptimWrapperConstructor`` on that sub-module::

        optim_wrapper = dict(
            constructor='VQGANMultiOptimWrapperConstructor',
            tokenizer=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4)),
            discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4)))

    Args:
        optim_wrapper_cfg (dict): The mapping above.
        paramwise_cfg (dict, optional): Applied to every sub-module.
            Defaults to None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict) or not optim_wrapper_cfg:
            raise TypeError('VQGANMultiOptimWrapperConstructor needs a dict of per-module '
                            f'optim-wrapper configs, got {optim_wrapper_cfg!r}')
        self.optim_wrapper_cfg = optim_wrapper_cfg
        self.paramwise_cfg = paramwise_cfg

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        if hasattr(model, 'module'):
            model = model.module
        wrappers = {}
        for name, cfg in self.optim_wrapper_cfg.items():
            sub = getattr(model, name, None)
            if not isinstance(sub, nn.Module):
                raise KeyError(f'optim_wrapper key {name!r} does not name a sub-module of '
                               f'{type(model).__name__}; use the attribute names '
                               "('tokenizer', 'discriminator').")
            cfg = dict(cfg)
            paramwise = cfg.pop('paramwise_cfg', self.paramwise_cfg)
            wrappers[name] = DefaultOptimWrapperConstructor(cfg, paramwise)(sub)
        return OptimWrapperDict(**wrappers)


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
        perceptual_loss (dict, optional): :class:`VQGANPerceptualLoss` config
            (``checkpoint`` = local VGG16 weights). Defaults to None (off).
        perceptual_weight (float): Its weight. Defaults to 1.
        discriminator (dict, optional): :class:`VQGANPatchDiscriminator` config;
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
