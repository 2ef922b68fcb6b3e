"""``ADDPPretrainEncoder``: the ADDP pixel encoder used in pretraining (reference
``models_addp.py``, ``forward_encoder``).

The downstream encoders are :class:`~addp_mm.models.backbones.ADDPVisionTransformer`
(classification, segmentation) and :class:`~addp_mm.models.backbones.ADDPViTDetBackbone`
(detection); both read this encoder's weights.
"""
from typing import List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.models.layers import Block, PatchEmbed, init_linear_layernorm, to_2tuple
from addp_mm.models.utils.encoder_checkpoint import (EncoderLayout, load_encoder_checkpoint,
                                                     resolve_pretrained)
from addp_mm.registry import register_model


@register_model
class ADDPPretrainEncoder(BaseModule):
    """The ADDP pixel encoder used in pretraining.

    ``patch_embed`` → ``+ pos_embed`` (learned, cls row 0) → prepend
    ``cls_token + pos_embed[0]`` → ``tokenizer_norm`` (LayerNorm) + dropout →
    pre-LN blocks (qkv bias, dropout on attention and proj/MLP) → ``norm``.
    All ``1 + h*w`` tokens are processed (no MAE-style dropping). Inputs are
    expected to be already ImageNet-normalised (see :meth:`ADDP.encode_pixels`).

    Args:
        img_size (int | tuple[int, int]): Input size. Defaults to 256.
        patch_size (int | tuple[int, int]): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int): Width D. Defaults to 768.
        num_layers (int): Number of blocks. Defaults to 12.
        num_heads (int): Attention heads. Defaults to 12.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.
        drop_rate (float): Dropout on proj/MLP outputs. Defaults to 0.1.
        attn_drop_rate (float): Dropout on attention weights. Defaults to 0.1.
        tokenizer_drop_rate (float): Dropout after ``tokenizer_norm``.
            Defaults to 0.1.
        drop_path_rate (float): Stochastic depth (unused by the release).
            Defaults to 0.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        use_sdpa (bool): Fused attention kernels (numerically not bit-equal
            to the reference's fp32-logit path). Defaults to False.
        init_cfg (dict | list[dict], optional): mmengine init config. A
            ``type='Pretrained'`` entry (``checkpoint``, optional ``prefix``)
            loads the encoder of any supported checkpoint through
            :mod:`addp_mm.models.utils.encoder_checkpoint` (every key
            accounted for, :attr:`pretrained_report`). Defaults to None.
    """

    def __init__(self,
                 img_size: Union[int, Sequence[int]] = 256,
                 patch_size: Union[int, Sequence[int]] = 16,
                 in_channels: int = 3,
                 embed_dims: int = 768,
                 num_layers: int = 12,
                 num_heads: int = 12,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.1,
                 attn_drop_rate: float = 0.1,
                 tokenizer_drop_rate: float = 0.1,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 use_sdpa: bool = False,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        pretrained, prefix, init_cfg = resolve_pretrained(None, init_cfg, type(self).__name__)
        super().__init__(init_cfg=init_cfg)
        self.pretrained, self.pretrained_prefix = pretrained, prefix
        self.pretrained_report: Optional[dict] = None
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f'img_size {self.img_size} is not divisible by patch_size {self.patch_size}')
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dims = embed_dims
        self.num_layers = num_layers

        # conv k=s=patch with bias: [B, C, H, W] -> [B, h*w, D]
        self.patch_embed = PatchEmbed(self.img_size, self.patch_size, in_channels, embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dims))
        self.tokenizer_norm = nn.LayerNorm(embed_dims, eps=1e-6)
        self.tokenizer_dropout = nn.Dropout(tokenizer_drop_rate)
        dpr = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.blocks = nn.ModuleList([
            Block(embed_dims, num_heads, mlp_ratio, qkv_bias=True, drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_eps=norm_eps, use_sdpa=use_sdpa)
            for i in range(num_layers)])
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def init_weights(self) -> None:
        """Reference init, or the encoder of the ``Pretrained`` init_cfg."""
        super().init_weights()
        if self.pretrained:
            self.pretrained_report = load_encoder_checkpoint(
                self, self.pretrained, EncoderLayout(
                    embed_dims=self.embed_dims, num_layers=self.num_layers,
                    patch_size=self.patch_size, grid=self.grid_size, cls_token=True,
                    tokenizer_norm=True, final_norm=True, fresh=lambda k: False),
                prefix=self.pretrained_prefix)
            return
        nn.init.normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.cls_token, std=.02)
        self.apply(init_linear_layernorm)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def embed(self, x: Tensor) -> Tensor:
        """The block input: embeddings after ``tokenizer_norm`` and dropout.

        Args:
            x (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: ``[B, 1 + h*w, D]`` (slot 0 = cls).
        """
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f'input size {tuple(x.shape[-2:])} does not match the encoder img_size {self.img_size} '
                f'(token grid {self.grid_size}); resize/crop the images to {self.img_size}.')
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]  # [B, N, D]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)  # [B, 1+N, D]
        return self.tokenizer_dropout(self.tokenizer_norm(tokens))

    def forward(self, x: Tensor) -> Tensor:
        """Encode normalised images to ``[B, 1 + h*w, D]`` (after ``norm``)."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


__all__ = ['ADDPPretrainEncoder']
