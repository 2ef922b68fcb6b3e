"""Pre-LN ViT building blocks shared by the ADDP encoder/decoder, the MAGE
token predictor and the dense-prediction backbones.

The layers are timm's (``timm.models.vision_transformer.Block``,
``timm.layers.Mlp``, ``DropPath``, ``PatchEmbed``), so parameter names are
timm's (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``, ``patch_embed.proj``) and the officially released ADDP and MAGE
checkpoints load without renaming. The one addition is :class:`Attention`, a
timm ``Attention`` with the reference's attention-logit path: ``q·kᵀ`` and the
softmax in float32 even under autocast (reference ``models_addp.py``), which
keeps AMP numerics at the reference's, and an additive bias hook used by the
relative position bias of ViTDet.
"""
from functools import partial
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.layers.attention import Attention as TimmAttention
from timm.models.vision_transformer import Block as TimmBlock
from torch import Tensor, nn


class Attention(TimmAttention):
    """timm's multi-head self-attention with the reference's logit path.

    Same parameters as timm's ``Attention`` (fused ``qkv``, ``proj``). The
    forward differs in the explicit path only: ``(q·kᵀ)·scale`` (scaled after
    the product, as the reference) in float32 under autocast, a max-subtracted
    softmax and ``attn @ v`` in the value dtype. ``use_sdpa=True`` switches to
    ``F.scaled_dot_product_attention``.

    Args:
        dim (int): Token width.
        num_heads (int): Number of heads; must divide ``dim``. Defaults to 8.
        use_sdpa (bool): Use ``F.scaled_dot_product_attention`` (flash /
            memory-efficient kernels) instead of the explicit softmax.
            Defaults to False.
        fp32_logits (bool): In the explicit path, compute ``q·kᵀ`` and the
            softmax in float32 even under autocast. Defaults to True.
        **kwargs: Other arguments of timm's ``Attention`` (``qkv_bias``,
            ``attn_drop``, ``proj_drop``, ...).
    """

    def __init__(self, dim: int, num_heads: int = 8, use_sdpa: bool = False,
                 fp32_logits: bool = True, **kwargs) -> None:
        if dim % num_heads != 0:
            raise ValueError(f'width {dim} is not divisible by num_heads={num_heads}')
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.use_sdpa = use_sdpa
        self.fp32_logits = fp32_logits

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``[B, N, C]`` → ``q, k, v``, each ``[B, heads, N, head_dim]``."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: Tensor, k: Tensor, v: Tensor,
               attn_mask: Optional[Tensor] = None) -> Tensor:
        """Attention of ``q, k, v`` (``[B, heads, N, head_dim]``) → ``[B, N, C]``
        after the output projection.

        ``attn_mask`` is a boolean keep-mask or an additive bias broadcastable
        to ``[B, heads, N, N]``.
        """
        B, _, N, _ = q.shape
        if attn_mask is not None and attn_mask.dtype != torch.bool and self.use_sdpa:
            attn_mask = attn_mask.to(q.dtype)
        if self.use_sdpa:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            if self.fp32_logits and torch.is_autocast_enabled(q.device.type):
                with torch.autocast(device_type=q.device.type, enabled=False):
                    attn = (q.float() @ k.float().transpose(-2, -1)) * self.scale
            else:
                attn = (q @ k.transpose(-2, -1)) * self.scale
            if attn_mask is not None:
                attn = attn.masked_fill(~attn_mask, float('-inf')) if attn_mask.dtype == torch.bool \
                    else attn + attn_mask
            attn = attn - attn.amax(dim=-1, keepdim=True)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn.to(v.dtype) @ v
        x = self.norm(x.transpose(1, 2).reshape(B, N, -1))
        return self.proj_drop(self.proj(x))

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                is_causal: bool = False) -> Tensor:
        if is_causal:
            raise NotImplementedError('causal attention is not used by ADDP')
        return self.attend(*self.qkv_heads(x), attn_mask)


class Block(TimmBlock):
    """Pre-LN transformer block: timm's ``Block`` with :class:`Attention`.

    ``x + DropPath(Attn(LN(x)))``, then ``x + DropPath(MLP(LN(x)))`` with an
    exact-GELU MLP; the arguments keep the names of the ADDP / MAGE reference.

    Args:
        dim (int): Token width.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP relative to ``dim``.
            Defaults to 4.
        qkv_bias (bool): Bias on ``qkv``. Defaults to True.
        drop (float): Dropout on the projection and MLP outputs. Defaults to 0.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        drop_path (float): Stochastic depth rate. Defaults to 0.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        use_sdpa (bool): See :class:`Attention`. Defaults to False.
        attn_layer (type): :class:`Attention` or a subclass. Defaults to
            :class:`Attention`.
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
                 use_sdpa: bool = False,
                 attn_layer: type = Attention) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop,
                         attn_drop=attn_drop, drop_path=drop_path,
                         norm_layer=partial(nn.LayerNorm, eps=norm_eps), attn_layer=attn_layer)
        self.attn.use_sdpa = use_sdpa


class MlmLayer(nn.Module):
    """BERT-style output head tied to an embedding table.

    ``logits = LN(GELU(fc(x))) · Wᵀ + bias`` where ``W`` is the (externally
    owned) token-embedding weight, passed at call time. The caller decides
    whether ``W`` is detached.

    Args:
        in_dim (int): Width of the incoming features.
        embed_dim (int): Width of the embedding table.
        vocab_size (int): Number of output ids (``bias`` length).
        ln_eps (float): LayerNorm epsilon. Defaults to 1e-5 (the reference's).
    """

    def __init__(self, in_dim: int, embed_dim: int, vocab_size: int, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, embed_dim)
        self.gelu = nn.GELU()
        self.ln = nn.LayerNorm(embed_dim, eps=ln_eps)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        x = self.ln(self.gelu(self.fc(x)))
        return x @ word_embeddings.t() + self.bias


def to_2tuple(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``8 -> (8, 8)``; a pair is checked and returned as ints."""
    if isinstance(x, int):
        return (x, x)
    x = tuple(x)
    if len(x) != 2:
        raise ValueError(f'expected an int or a pair, got {x}')
    return (int(x[0]), int(x[1]))


def init_linear_layernorm(m: nn.Module) -> None:
    """Xavier-uniform ``Linear`` (zero bias) and unit ``LayerNorm``, as MAE/MAGE/ADDP."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def set_sdpa(module: nn.Module, enabled: bool) -> None:
    """Switch every :class:`Attention` under ``module`` to or from SDPA."""
    for m in module.modules():
        if isinstance(m, Attention):
            m.use_sdpa = enabled


__all__ = ['Attention', 'Mlp', 'DropPath', 'Block', 'MlmLayer', 'PatchEmbed', 'set_sdpa', 'to_2tuple',
           'init_linear_layernorm']
