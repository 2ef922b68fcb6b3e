"""The VQGAN training losses (Esser et al., "Taming Transformers for
High-Resolution Image Synthesis", CVPR 2021; VQ-VAE, van den Oord et al.,
NeurIPS 2017): codebook / commitment losses with the straight-through
estimator, the hinge discriminator loss, a PatchGAN discriminator and a VGG16
perceptual distance. Used by :class:`~addp_mm.models.selfsup.VQGANTrainer`.
"""
import os.path as osp
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.registry import register_model
from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                      load_external_state_dict)
from addp_mm.utils.pixels import IMAGENET_MEAN, IMAGENET_STD

__all__ = ['VQGANPatchDiscriminator', 'VQGANPerceptualLoss', 'vq_losses', 'hinge_d_loss']


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
