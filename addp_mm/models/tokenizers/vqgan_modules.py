"""Building blocks of the MaskGIT-style VQGAN behind
:class:`~addp_mm.models.tokenizers.vqgan.VQGANTokenizer`: residual block,
up-sampling, encoder, decoder and the codebook holder.

Attribute names follow the official checkpoint keys (``encoder.down.{i}.block.{j}``,
``decoder.up.{i}.upsample.conv``, ``quantize.embedding.weight``, ...).

This is **not** a stock taming-transformers VQGAN. The released
``vqgan_jax_strongaug.ckpt`` is a port of MaskGIT's JAX tokenizer:

* no attention blocks (the ``attn_resolutions`` entry of the official yaml is
  ignored);
* 2x2 **average-pool** down-sampling (no parameters) after every encoder level
  but the last;
* **nearest** 2x up-sampling followed by a 3x3 convolution
  (``decoder.up.{i}.upsample.conv``) after every decoder level but level 0;
* bias-free 3x3 convolutions in the residual blocks and in ``encoder.conv_in``;
* when a residual block changes the channel count, its 1x1 ``nin_shortcut``
  maps out->out channels and is applied to the **residual branch output**:
  ``out = nin_shortcut(r) + r`` (no path from the block input);
* no ``quant_conv`` / ``post_quant_conv``; nearest-neighbour L2 quantisation
  against ``quantize.embedding.weight``;
* images go in and come out in the [0, 1] range (the decoder output is not
  clamped).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    'swish', 'swish_fused', 'VQGANResBlock', 'VQGANUpsample', 'VQGANLevel', 'VQGANMid',
    'VQGANEncoder', 'VQGANDecoder', 'VQGANQuantize'
]


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (the reference's formulation)."""
    return x * torch.sigmoid(x)


def swish_fused(x: Tensor) -> Tensor:
    """``F.silu`` (one kernel, in place when no graph is recorded).

    Same function as :func:`swish`; the fused kernel may differ from
    ``x * sigmoid(x)`` in the last bit (max abs difference ~1e-6 on O(1)
    activations).
    """
    return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


class VQGANResBlock(nn.Module):
    """MaskGIT-style residual block: ``r = conv2(swish(GN(conv1(swish(GN(x))))))``.

    The output is ``x + r`` if the width is unchanged and
    ``nin_shortcut(r) + r`` otherwise (out->out 1x1 conv on the residual).
    """

    def __init__(self, in_channels: int, out_channels: int, num_groups: int,
                 eps: float) -> None:
        super().__init__()
        #: use the fused (in-place without autograd) SiLU; set by the tokenizer
        self.fused_act = False
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(out_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = swish_fused if self.fused_act else swish
        r = self.conv1(act(self.norm1(x)))
        r = self.conv2(act(self.norm2(r)))
        if self.in_channels != self.out_channels:
            return self.nin_shortcut(r) + r
        return x + r


class VQGANUpsample(nn.Module):
    """Nearest 2x up-sampling followed by a 3x3 convolution (with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class VQGANLevel(nn.Module):
    """One resolution level: ``block`` (ModuleList) and optional ``upsample``."""

    def __init__(self, blocks: List[nn.Module], upsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if upsample is not None:
            self.upsample = upsample


class VQGANMid(nn.Module):
    """The two middle residual blocks (``block_1``, ``block_2``)."""

    def __init__(self, channels: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.block_1 = VQGANResBlock(channels, channels, num_groups, eps)
        self.block_2 = VQGANResBlock(channels, channels, num_groups, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x))


class VQGANEncoder(nn.Module):

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 in_channels: int, z_channels: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.num_levels = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1, bias=False)
        in_mult = (1, ) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_out = ch
        for level, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_mult[level], ch * mult
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(VQGANResBlock(block_in, block_out, num_groups, eps))
                block_in = block_out
            self.down.append(VQGANLevel(blocks))
        self.mid = VQGANMid(block_out, num_groups, eps)
        self.norm_out = nn.GroupNorm(num_groups, block_out, eps=eps, affine=True)
        self.conv_out = nn.Conv2d(block_out, z_channels, 1)
        self.fused_act = False

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # [B, ch, H, W]
        for level, down in enumerate(self.down):
            for block in down.block:
                h = block(h)
            if level != self.num_levels - 1:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        h = self.mid(h)  # [B, ch*mult[-1], H/f, W/f]
        act = swish_fused if self.fused_act else swish
        return self.conv_out(act(self.norm_out(h)))  # [B, z, H/f, W/f]


class VQGANDecoder(nn.Module):

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 out_channels: int, z_channels: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.num_levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = VQGANMid(block_in, num_groups, eps)
        levels: List[Optional[VQGANLevel]] = [None] * self.num_levels
        for level in reversed(range(self.num_levels)):
            block_out = ch * ch_mult[level]
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(VQGANResBlock(block_in, block_out, num_groups, eps))
                block_in = block_out
            levels[level] = VQGANLevel(blocks, VQGANUpsample(block_in) if level != 0 else None)
        # indexed by level (0 = full resolution) but run from the last level down
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(num_groups, block_in, eps=eps, affine=True)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)
        self.fused_act = False

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # [B, ch*mult[-1], h, w]
        for level in reversed(range(self.num_levels)):
            up = self.up[level]
            for block in up.block:
                h = block(h)
            if level != 0:
                h = up.upsample(h)
        act = swish_fused if self.fused_act else swish
        return self.conv_out(act(self.norm_out(h)))  # [B, 3, H, W]


class VQGANQuantize(nn.Module):
    """Holds the codebook as ``embedding.weight`` [num_embeddings, embed_dim]."""

    def __init__(self, num_embeddings: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)
