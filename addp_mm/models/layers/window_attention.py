"""ViTDet layers for plain ViT backbones: window attention and decomposed
relative position bias (Li et al., "Exploring Plain Vision Transformer
Backbones for Object Detection"; MViTv2).

Parameter names are those of :class:`~addp_mm.models.layers.Block` (timm's)
plus ``attn.rel_pos_h``/``attn.rel_pos_w``. The window partition and
relative-position lookup helpers are mmpretrain's ``ViTSAM`` ones
(``mmpretrain.models.backbones.vit_sam``); its ``TransformerEncoderLayer`` is
not reused because its parameter names (``ln1``, ``ffn.layers``) differ from
ADDP's and it has no drop path on the attention branch.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.vit_sam import (get_rel_pos, window_partition,
                                                 window_unpartition)
from torch import Tensor, nn

from .transformer import Attention, Block


def decomposed_rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor,
                            hw: Tuple[int, int]) -> Tensor:
    """Decomposed relative position bias (MViTv2 / ViTDet) as an additive mask.

    Args:
        q (Tensor): Queries of the spatial tokens, ``[B, heads, H*W, head_dim]``.
        rel_pos_h (Tensor): Height table ``[2*Sh-1, head_dim]`` (linearly
            resized by ``get_rel_pos`` when ``Sh != H``).
        rel_pos_w (Tensor): Width table ``[2*Sw-1, head_dim]``.
        hw (tuple[int, int]): Spatial size ``(H, W)`` of the token grid.

    Returns:
        Tensor: Bias ``[B, heads, H*W, H*W]`` to add to the attention logits.
    """
    H, W = hw
    B, nh, N, C = q.shape
    Rh = get_rel_pos(H, H, rel_pos_h).to(q.dtype)  # [H, H, C]
    Rw = get_rel_pos(W, W, rel_pos_w).to(q.dtype)  # [W, W, C]
    r_q = q.reshape(B * nh, H, W, C)
    rel_h = torch.einsum('bhwc,hkc->bhwk', r_q, Rh)  # [B*nh, H, W, H]
    rel_w = torch.einsum('bhwc,wkc->bhwk', r_q, Rw)  # [B*nh, H, W, W]
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]  # [B*nh, H, W, H, W]
    return bias.reshape(B, nh, N, N)


class ADDPRelPosAttention(Attention):
    """:class:`~addp_mm.models.layers.Attention` with optional decomposed
    relative position bias, added to the logits through the attention mask.

    Built by the timm block with the arguments of
    :class:`~addp_mm.models.layers.Attention`; :meth:`init_rel_pos` then
    allocates the tables.
    """

    use_rel_pos = False

    def init_rel_pos(self, rel_pos_size: Tuple[int, int]) -> None:
        """Allocate zero tables for grid ``(H, W)`` (``2*H-1`` / ``2*W-1``
        rows; other sizes are handled by linear interpolation of the tables).
        Zero init, as ViTDet: the pretrained model starts unchanged."""
        self.use_rel_pos = True
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, self.head_dim))

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]] = None,  # type: ignore[override]
                num_extra_tokens: int = 0) -> Tensor:
        """Attend over ``x``.

        Args:
            x (Tensor): Tokens ``[B, N, C]``; the first ``num_extra_tokens``
                (e.g. cls) precede ``H*W`` spatial tokens in raster order.
            hw (tuple[int, int], optional): Spatial grid; needed with rel pos.
            num_extra_tokens (int): Leading non-spatial tokens; they get no
                relative bias. Defaults to 0.

        Returns:
            Tensor: ``[B, N, C]``.
        """
        q, k, v = self.qkv_heads(x)  # [B, heads, N, head_dim]
        bias = None
        if self.use_rel_pos:
            N = x.shape[1]
            if hw is None or hw[0] * hw[1] + num_extra_tokens != N:
                raise ValueError(f'relative position bias needs the token grid: got hw={hw} '
                                 f'and {num_extra_tokens} extra tokens for N={N} tokens')
            bias = decomposed_rel_pos_bias(q[:, :, num_extra_tokens:], self.rel_pos_h,
                                           self.rel_pos_w, hw)
            if num_extra_tokens:
                # extra tokens attend / are attended without a relative bias
                bias = F.pad(bias, (num_extra_tokens, 0, num_extra_tokens, 0))
        return self.attend(q, k, v, bias)


class ADDPWindowBlock(Block):
    """Pre-LN ADDP block with optional window attention and relative bias.

    Parameter names are those of :class:`~addp_mm.models.layers.Block`
    (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
    plus ``attn.rel_pos_h``/``attn.rel_pos_w`` when ``use_rel_pos``.

    Args:
        dim (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.
        qkv_bias (bool): Bias on ``qkv``. Defaults to True.
        drop (float): Projection / MLP dropout. Defaults to 0.
        attn_drop (float): Attention dropout. Defaults to 0.
        drop_path (float): Stochastic depth rate. Defaults to 0.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        window_size (int): Window side in tokens; 0 means global attention.
            Defaults to 0.
        window_padding (bool): Zero-pad the map to a multiple of
            ``window_size``; if False, a non-dividing map raises a ValueError.
            Defaults to True.
        use_rel_pos (bool): Decomposed relative position bias. Defaults to False.
        rel_pos_size (tuple[int, int], optional): Nominal grid of a global block
            (window blocks use ``(window_size, window_size)``). Defaults to None.
        use_sdpa (bool): Use SDPA kernels. Defaults to False.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 norm_eps: float = 1e-6,
                 window_size: int = 0,
                 window_padding: bool = True,
                 use_rel_pos: bool = False,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 use_sdpa: bool = False) -> None:
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path,
                         norm_eps, use_sdpa, attn_layer=ADDPRelPosAttention)
        self.window_size = window_size
        self.window_padding = window_padding
        if use_rel_pos:
            size = (window_size, window_size) if window_size > 0 else rel_pos_size
            if size is None:
                raise ValueError('rel_pos_size (H, W) is required when use_rel_pos=True')
            self.attn.init_rel_pos(size)

    def forward(self, x: Tensor, hw: Tuple[int, int],  # type: ignore[override]
                num_extra_tokens: int = 0) -> Tensor:
        """``x``: ``[B, N, C]`` tokens on grid ``hw`` (after ``num_extra_tokens``)."""
        B, N, C = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = hw
            ws = self.window_size
            if num_extra_tokens:
                raise ValueError('window attention does not support extra (cls) tokens')
            if not self.window_padding and (H % ws or W % ws):
                raise ValueError(
                    f'window_size={ws} does not divide the {H}x{W} token map and '
                    'window_padding=False. Set window_padding=True, choose a window size '
                    f'that divides the map, or pad inputs to a multiple of {ws} patches '
                    '(e.g. BatchFixedSizePad / pad_size_divisor in the data preprocessor).')
            windows, pad_hw = window_partition(x.view(B, H, W, C), ws)  # [B*nW, ws, ws, C]
            windows = self.attn(windows.view(-1, ws * ws, C), (ws, ws))
            x = window_unpartition(windows.view(-1, ws, ws, C), ws, pad_hw, (H, W))
            x = x.reshape(B, N, C)
        else:
            x = self.attn(x, hw, num_extra_tokens)
        x = shortcut + self.drop_path1(self.ls1(x))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


__all__ = ['ADDPRelPosAttention', 'ADDPWindowBlock', 'decomposed_rel_pos_bias']
