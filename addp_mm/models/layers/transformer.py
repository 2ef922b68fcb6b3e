"""Pre-LN ViT building blocks shared by the ADDP encoder/decoder and the MAGE
token predictor.

Parameter names follow timm's ``vision_transformer.py`` (``norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that the
officially released ADDP and MAGE checkpoints load without renaming.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection.

    Args:
        dim (int): Token width.
        num_heads (int): Number of heads; must divide ``dim``.
        qkv_bias (bool): Bias on the ``qkv`` projection. Defaults to True.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the output projection. Defaults to 0.
        use_sdpa (bool): Use ``F.scaled_dot_product_attention`` (flash / memory
            efficient kernels) instead of the explicit softmax. Defaults to False.
        fp32_logits (bool): In the explicit path, compute ``q·kᵀ`` and the softmax
            in float32 even under autocast, as the reference does. Defaults to True.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 use_sdpa: bool = False,
                 fp32_logits: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'width {dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_sdpa = use_sdpa
        self.fp32_logits = fp32_logits

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        B, N, C = x.shape
        # [3, B, heads, N, head_dim]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
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
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Two-layer MLP with exact (erf) GELU: ``fc1 → GELU → drop → fc2 → drop``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity when ``p == 0`` or in eval)."""

    def __init__(self, p: float = 0.) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0. or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

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
                 use_sdpa: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, use_sdpa=use_sdpa)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


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


__all__ = ['Attention', 'Mlp', 'DropPath', 'Block', 'MlmLayer', 'set_sdpa', 'to_2tuple', 'init_linear_layernorm']
