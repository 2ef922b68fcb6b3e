"""``ADDPViTSeg``: ADDP ViT backbone for semantic segmentation (UperNet).

A plain ViT with global attention in every block (the blocks of
:class:`~addp_mm.models.backbones.addp_vitdet.ADDPViTDet` with windows off),
a cls token, an absolute position embedding resized from the pretraining grid
(16x16 at 256 px) to the segmentation crop (32x32 at 512 px) when the weights
are loaded, optional decomposed relative position bias and drop path. It
returns stride-16 maps from configurable blocks (``[3, 5, 7, 11]`` for B,
``[7, 11, 15, 23]`` for L), which mmseg's ``Feature2Pyramid`` rescales by
``[4, 2, 1, 0.5]`` for ``UPerHead`` — the MAE/BEiT UperNet protocol.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from addp_mm.registry import register_model_everywhere
from addp_mm.models.layers import to_2tuple
from .addp_vitdet import ADDPDenseViTBase, ADDPWindowBlock, _check_out_indices


@register_model_everywhere
class ADDPViTSeg(ADDPDenseViTBase):
    """ADDP ViT for UperNet-style segmentation.

    The cls token is kept (as in pretraining, ADDP fine-tuning and mmseg's
    ``MAE`` backbone) and removed from the outputs. No final norm is applied
    (mmseg ``MAE``'s ``final_norm=False``); ``Feature2Pyramid`` normalises.
    ``tokenizer_norm`` is dropped by default, as ADDP's official fine-tuning does.

    Args:
        arch (str | dict): ``'b'``/``'base'``, ``'l'``/``'large'`` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` (and ``mlp_ratio``).
            Defaults to ``'b'``.
        img_size (int | tuple): Crop size the position embedding (and the
            relative position tables) are sized for; checkpoints are resized to
            it at load time and other input sizes are handled by resizing on the
            fly. Defaults to 512.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int]): Blocks whose outputs are returned.
            Defaults to ``(3, 5, 7, 11)``.
        use_rel_pos (bool): Decomposed relative position bias (zero init).
            Defaults to False (mmseg ``MAE`` has none).
        qkv_bias (bool): Bias on ``qkv``. Defaults to True.
        drop_rate (float): Dropout. Defaults to 0.
        attn_drop_rate (float): Attention dropout. Defaults to 0.
        drop_path_rate (float): Max stochastic depth (linear). Defaults to 0.1.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        use_tokenizer_norm (bool): Keep the pretraining ``tokenizer_norm``.
            Defaults to False.
        use_sdpa (bool): Use SDPA kernels. Defaults to False.
        pretrained (str, optional): ADDP checkpoint loaded in ``init_weights``.
            Defaults to None.
        init_cfg (dict | list[dict], optional): mmengine init config; a
            ``Pretrained`` entry is routed to ``pretrained``. Defaults to None.
    """
    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, num_layers=12, num_heads=12)),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=1024, num_layers=24, num_heads=16)),
    }
    pos_embed_has_cls = True

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 512,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (3, 5, 7, 11),
                 use_rel_pos: bool = False,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_eps: float = 1e-6,
                 use_tokenizer_norm: bool = False,
                 use_sdpa: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        img = to_2tuple(img_size)
        if img[0] % patch_size or img[1] % patch_size:
            raise ValueError(f'img_size={img} is not a multiple of patch_size={patch_size}')
        grid = (img[0] // patch_size, img[1] // patch_size)
        super().__init__(arch, patch_size, in_channels, grid, drop_rate, use_tokenizer_norm,
                         norm_eps, pretrained, init_cfg)
        self.img_size = img
        self.out_indices = _check_out_indices(out_indices, self.num_layers)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList([
            ADDPWindowBlock(
                self.embed_dims, self.num_heads, self.mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, dpr[i], norm_eps, window_size=0, use_rel_pos=use_rel_pos,
                rel_pos_size=grid, use_sdpa=use_sdpa) for i in range(self.num_layers)])

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """``x``: ``[B, 3, H, W]`` → one ``[B, C, ceil(H/16), ceil(W/16)]`` map per
        entry of ``out_indices``."""
        B = x.shape[0]
        x, (h, w) = self._embed(x)  # [B, 1 + h*w, C]
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, (h, w), num_extra_tokens=1)
            if i in self.out_indices:
                # drop cls: [B, h*w, C] -> [B, C, h, w]
                outs.append(x[:, 1:].transpose(1, 2).reshape(B, self.embed_dims, h, w).contiguous())
        return tuple(outs)


__all__ = ['ADDPViTSeg']
