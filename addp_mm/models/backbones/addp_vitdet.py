"""ADDP ViT backbones for dense prediction: ``ADDPViTDet`` (COCO, ViTDet-style).

The blocks keep the timm parameter names of the ADDP pixel encoder
(``patch_embed.proj``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``)
so pretrained ADDP encoders load without renaming. What is added on top:

* window attention (ViTDet): every block not listed in ``global_attn_indexes``
  attends inside non-overlapping ``window_size`` x ``window_size`` windows of the
  stride-16 map; the map is zero-padded to a multiple of the window when
  ``window_padding=True`` (as ViTDet does);
* optional decomposed relative position bias (``attn.rel_pos_h/w``, MViTv2 /
  ViTDet, zero-initialised; not part of ADDP checkpoints);
* an absolute position embedding stored on the *pretraining* grid without the
  cls position and bicubically resized to the feature map in ``forward``.

The window partition and relative-position lookup helpers are reused from
mmpretrain's ``ViTSAM`` (``mmpretrain.models.backbones.vit_sam``); its
``TransformerEncoderLayer`` is not reused because its parameter names
(``ln1``, ``ffn.layers``) differ from ADDP's and it has no drop path on the
attention branch.

The shared base class :class:`ADDPDenseViTBase` also serves the segmentation
backbone in :mod:`addp_mm.models.backbones.addp_vit_seg`.
"""
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vit_sam import (get_rel_pos, window_partition,
                                                 window_unpartition)
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn

from addp_mm.models.layers import Attention, Block, PatchEmbed, to_2tuple
from addp_mm.models.utils.encoder_weights import load_addp_encoder_state_dict
from addp_mm.registry import register_model_everywhere
from addp_mm.utils.checkpoint import CheckpointError, check_state_dict

_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')




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


class ADDPDenseViTBase(BaseModule):
    """Shared parts of the ADDP det/seg backbones: patch/pos embedding,
    optional ``tokenizer_norm``, layer depth for layer decay, weight init and
    pretrained-encoder loading with full key accounting.

    Subclasses build ``self.blocks`` and implement ``forward``.

    Pretrained weights are loaded in :meth:`init_weights` from ``pretrained``
    (or ``init_cfg=dict(type='Pretrained', checkpoint=...)``, which is routed
    to the same loader) through
    :func:`addp_mm.models.utils.load_addp_encoder_state_dict`, so our
    checkpoints (``backbone.`` prefix), official releases (``{'model': ...}``)
    and official fine-tuning files all work.
    """
    arch_zoo: Dict[str, dict] = {}
    #: position embedding carries a cls row (set by subclasses)
    pos_embed_has_cls: bool = False

    def __init__(self,
                 arch: Union[str, dict],
                 patch_size: int,
                 in_channels: int,
                 pos_grid: Tuple[int, int],
                 drop_rate: float,
                 use_tokenizer_norm: bool,
                 norm_eps: float,
                 pretrained: Optional[str],
                 init_cfg: Optional[Union[dict, List[dict]]]) -> None:
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            if pretrained is not None:
                raise ValueError('give the checkpoint either as `pretrained` or as '
                                 "init_cfg=dict(type='Pretrained'), not both")
            pretrained = init_cfg.get('checkpoint')
            init_cfg = None
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        self.num_heads = self.arch_settings['num_heads']
        self.mlp_ratio = self.arch_settings.get('mlp_ratio', 4.)
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.pretrained = pretrained
        # grid ceil(H / p) x ceil(W / p): inputs are zero-padded at the bottom/right
        self.patch_embed = PatchEmbed(None, patch_size, in_channels, self.embed_dims,
                                      flatten=False, dynamic_img_pad=True)
        n_pos = pos_grid[0] * pos_grid[1] + (1 if self.pos_embed_has_cls else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, self.embed_dims))
        self.tokenizer_norm = nn.LayerNorm(self.embed_dims, eps=norm_eps) \
            if use_tokenizer_norm else None
        self.pos_drop = nn.Dropout(drop_rate)
        #: filled by :meth:`load_pretrained` (for logs and tests)
        self.load_report: Optional[Dict[str, List[str]]] = None

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(f'unknown arch {arch!r}; choose from {sorted(self.arch_zoo)} '
                                 'or pass a dict with embed_dims/num_layers/num_heads')
            return dict(self.arch_zoo[key])
        need = {'embed_dims', 'num_layers', 'num_heads'}
        if not isinstance(arch, dict) or not need <= set(arch):
            raise ValueError(f'a custom arch must be a dict with keys {sorted(need)}, got {arch}')
        return dict(arch)

    # ------------------------------------------------------------------ layers
    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patchify and add the (resized) absolute position embedding.

        Returns ``[B, extra + h*w, C]`` tokens (extra = cls when the subclass
        uses one) and the grid ``(h, w)``.
        """
        x = self.patch_embed(x)  # [B, C, h, w]
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        n_extra = 1 if self.pos_embed_has_cls else 0
        if n_extra:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = self.pos_embed
        if hw != self.pos_grid:
            pos = resize_pos_embed(pos, self.pos_grid, hw, mode='bicubic',
                                   num_extra_tokens=n_extra)
        x = x + pos
        if self.tokenizer_norm is not None:
            x = self.tokenizer_norm(x)
        return self.pos_drop(x), hw

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay (BEiT/MAE rule).

        ``cls_token``, ``pos_embed``, ``patch_embed`` and ``tokenizer_norm`` get
        layer 0, ``blocks.i`` gets ``i + 1`` and everything else (including
        parameters outside ``prefix``: neck, heads) gets ``num_layers + 1``.

        Args:
            param_name (str): Full parameter name.
            prefix (str): Prefix of this backbone's parameters in the model,
                e.g. ``'backbone.'``. Defaults to ``''``.

        Returns:
            tuple[int, int]: ``(layer_id, num_layers + 2)``.
        """
        max_id = self.num_layers + 2
        if not param_name.startswith(prefix):
            return max_id - 1, max_id
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith(('patch_embed.', 'tokenizer_norm.')):
            return 0, max_id
        m = _BLOCK_KEY.match(name)
        if m:
            return int(m.group(1)) + 1, max_id
        return max_id - 1, max_id

    # ---------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Random init (timm-style), then load ``pretrained`` if given."""
        super().init_weights()
        if getattr(self, '_addp_weights_done', False):
            return
        trunc_normal_(self.pos_embed, std=.02)
        if getattr(self, 'cls_token', None) is not None:
            trunc_normal_(self.cls_token, std=.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.pretrained:
            self.load_pretrained(self.pretrained)
        self._addp_weights_done = True

    def _documented_unused(self) -> Tuple[str, ...]:
        """Checkpoint key prefixes this backbone deliberately does not use."""
        unused = ['norm.']  # final encoder norm: dense heads normalise themselves
        if self.tokenizer_norm is None:
            unused.append('tokenizer_norm.')  # dropped as in official fine-tuning
        if not self.pos_embed_has_cls:
            unused.append('cls_token')
        return tuple(unused)

    def _fresh_keys(self) -> List[str]:
        """Model keys that never come from an ADDP encoder checkpoint."""
        return [k for k in self.state_dict() if k.endswith(('.rel_pos_h', '.rel_pos_w'))]

    def convert_encoder_state_dict(self, enc: Dict[str, Tensor], source: str = 'checkpoint'
                                   ) -> Dict[str, List[str]]:
        """Load a timm-named ADDP encoder dict into this backbone.

        Checks the width, depth and patch size first (clear errors naming the
        config field to change), resizes ``pos_embed`` (dropping or keeping the
        cls row as this backbone needs), then loads strictly: every checkpoint
        key is either loaded or in :meth:`_documented_unused`, and every model
        key is either loaded or a documented fresh parameter (relative position
        tables, zero-initialised; ``tokenizer_norm`` when the file has none).

        Args:
            enc (dict[str, Tensor]): Encoder weights in timm naming.
            source (str): Name of the file for messages. Defaults to 'checkpoint'.

        Returns:
            dict[str, list[str]]: ``loaded``, ``ignored`` (checkpoint keys not
            used) and ``initialized`` (model keys not in the checkpoint).
        """
        enc = dict(enc)
        C = self.embed_dims
        ck_dim = enc['pos_embed'].shape[-1]
        if ck_dim != C or ('patch_embed.proj.weight' in enc
                           and enc['patch_embed.proj.weight'].shape[0] != C):
            raise CheckpointError(
                f'{source} has embed dim {ck_dim} (pos_embed {tuple(enc["pos_embed"].shape)}) but '
                f'{type(self).__name__} is configured with embed_dims={C}. Use the arch that '
                "matches the checkpoint (ADDP ViT-B: arch='b', 768; ViT-L: arch='l', 1024).")
        depth = 1 + max((int(m.group(1)) for m in map(_BLOCK_KEY.match, enc) if m), default=-1)
        if depth != self.num_layers:
            raise CheckpointError(
                f'{source} has {depth} transformer blocks but {type(self).__name__} is configured '
                f'with num_layers={self.num_layers}. Use the arch that matches the checkpoint.')
        pw = enc.get('patch_embed.proj.weight')
        if pw is not None and tuple(pw.shape[-2:]) != (self.patch_size, self.patch_size):
            raise CheckpointError(
                f'{source} uses patch size {tuple(pw.shape[-2:])}, the backbone patch_size='
                f'{self.patch_size}.')
        # position embedding: [1, (1+)n, C] on a square grid
        pos = enc['pos_embed']
        n = pos.shape[1]
        side = math.isqrt(n - 1)
        if side * side == n - 1:
            ck_cls, ck_grid = 1, (side, side)
        elif math.isqrt(n) ** 2 == n:
            ck_cls, ck_grid = 0, (math.isqrt(n), math.isqrt(n))
        else:
            raise CheckpointError(f'{source}: pos_embed with {n} rows is not a square grid '
                                  '(with or without a cls row)')
        if self.pos_embed_has_cls and not ck_cls:
            raise CheckpointError(f'{source}: pos_embed has no cls row but the backbone '
                                  'uses a cls token')
        if ck_cls and not self.pos_embed_has_cls:
            pos = pos[:, 1:]
        n_extra = 1 if self.pos_embed_has_cls else 0
        if ck_grid != self.pos_grid:
            pos = resize_pos_embed(pos.float(), ck_grid, self.pos_grid, mode='bicubic',
                                   num_extra_tokens=n_extra)
        enc['pos_embed'] = pos
        own = self.state_dict()
        fresh = {k: own[k] for k in self._fresh_keys() if k not in enc}
        if self.tokenizer_norm is not None and 'tokenizer_norm.weight' not in enc:
            # e.g. an official fine-tuning file: keep the identity-initialised norm
            fresh.update({k: own[k] for k in own if k.startswith('tokenizer_norm.')})
        full = {**enc, **fresh}
        ignore = self._documented_unused()
        check_state_dict(self, full, source, ignore_unexpected=ignore)
        self.load_state_dict({k: v for k, v in full.items() if k in own}, strict=True)
        report = dict(
            loaded=sorted(k for k in enc if k in own),
            ignored=sorted(k for k in enc if k not in own),
            initialized=sorted(fresh))
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: loaded {len(report["loaded"])} keys from {source} '
            f'(pos_embed grid {ck_grid} -> {self.pos_grid}); unused by design: '
            f'{report["ignored"]}; freshly initialised: {len(report["initialized"])} keys')
        self.load_report = report
        return report

    def load_pretrained(self, path: str) -> Dict[str, List[str]]:
        """Read ``path`` (any supported ADDP format) and load its encoder."""
        return self.convert_encoder_state_dict(load_addp_encoder_state_dict(path), repr(path))


@register_model_everywhere
class ADDPViTDet(ADDPDenseViTBase):
    """ADDP ViT as a ViTDet backbone (plain, single-scale, stride 16).

    Window attention in all blocks except ``global_attn_indexes`` (2, 5, 8, 11
    for B; 5, 11, 17, 23 for L), optional decomposed relative position bias,
    absolute position embedding kept on the pretraining grid without the cls
    position and resized to the feature map in ``forward``, linearly
    increasing drop path. No cls token and no final norm (the simple feature
    pyramid normalises its outputs). ``tokenizer_norm`` of the pretraining
    encoder is dropped by default, as ADDP's official fine-tuning does.

    Args:
        arch (str | dict): ``'b'``/``'base'``, ``'l'``/``'large'``, or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optionally
            ``mlp_ratio`` and ``global_attn_indexes``. Defaults to ``'b'``.
        img_size (int | tuple): Nominal input size, used to size the relative
            position tables of the global blocks. Defaults to 1024.
        pretrain_img_size (int | tuple): Input size of the pretraining (grid
            of the stored ``pos_embed``). Defaults to 256 (ADDP).
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        window_size (int): Window side of the non-global blocks. Defaults to 14.
        window_padding (bool): Pad maps not divisible by ``window_size``; if
            False such inputs raise a ValueError. Defaults to True.
        global_attn_indexes (Sequence[int], optional): Override the arch's
            global blocks. Defaults to None.
        use_rel_pos (bool): Decomposed relative position bias. Defaults to True.
        qkv_bias (bool): Bias on ``qkv``. Defaults to True.
        drop_rate (float): Dropout after pos-embed / in blocks. Defaults to 0.
        attn_drop_rate (float): Attention dropout. Defaults to 0.
        drop_path_rate (float): Max stochastic depth (linear). Defaults to 0.1.
        norm_eps (float): LayerNorm epsilon. Defaults to 1e-6.
        use_tokenizer_norm (bool): Keep the pretraining ``tokenizer_norm``
            LayerNorm after the position embedding. Defaults to False.
        out_indices (Sequence[int]): Blocks whose outputs are returned (stride
            16 maps). Defaults to ``(-1,)``.
        use_sdpa (bool): Use SDPA kernels. Defaults to False.
        pretrained (str, optional): ADDP checkpoint loaded in ``init_weights``.
            Defaults to None.
        init_cfg (dict | list[dict], optional): mmengine init config; a
            ``Pretrained`` entry is routed to ``pretrained``. Defaults to None.
    """
    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, num_layers=12, num_heads=12,
                                           global_attn_indexes=(2, 5, 8, 11))),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=1024, num_layers=24, num_heads=16,
                                            global_attn_indexes=(5, 11, 17, 23))),
    }
    pos_embed_has_cls = False

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 1024,
                 pretrain_img_size: Union[int, Sequence[int]] = 256,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 window_size: int = 14,
                 window_padding: bool = True,
                 global_attn_indexes: Optional[Sequence[int]] = None,
                 use_rel_pos: bool = True,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 norm_eps: float = 1e-6,
                 use_tokenizer_norm: bool = False,
                 out_indices: Sequence[int] = (-1,),
                 use_sdpa: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        pre = to_2tuple(pretrain_img_size)
        if pre[0] % patch_size or pre[1] % patch_size:
            raise ValueError(f'pretrain_img_size={pre} is not a multiple of patch_size={patch_size}')
        super().__init__(arch, patch_size, in_channels, (pre[0] // patch_size, pre[1] // patch_size),
                         drop_rate, use_tokenizer_norm, norm_eps, pretrained, init_cfg)
        img = to_2tuple(img_size)
        self.img_size = img
        grid = (math.ceil(img[0] / patch_size), math.ceil(img[1] / patch_size))
        if global_attn_indexes is None:
            global_attn_indexes = self.arch_settings.get('global_attn_indexes')
        if global_attn_indexes is None:  # custom arch: last block of each quarter
            q = max(self.num_layers // 4, 1)
            global_attn_indexes = tuple(range(q - 1, self.num_layers, q))
        self.global_attn_indexes = tuple(i % self.num_layers for i in global_attn_indexes)
        if any(not -self.num_layers <= i < self.num_layers for i in global_attn_indexes):
            raise ValueError(f'global_attn_indexes {tuple(global_attn_indexes)} refer to blocks '
                             f'that do not exist (num_layers={self.num_layers})')
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0, got {window_size}')
        if not window_padding and window_size > 0 and (grid[0] % window_size or grid[1] % window_size):
            raise ValueError(
                f'window_size={window_size} does not divide the {grid[0]}x{grid[1]} token map of '
                f'img_size={img} (patch {patch_size}) and window_padding=False. Set '
                'window_padding=True or choose a window size that divides the map.')
        self.window_size = window_size
        self.out_indices = _check_out_indices(out_indices, self.num_layers)
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList([
            ADDPWindowBlock(
                self.embed_dims, self.num_heads, self.mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, dpr[i], norm_eps,
                window_size=0 if i in self.global_attn_indexes else window_size,
                window_padding=window_padding, use_rel_pos=use_rel_pos, rel_pos_size=grid,
                use_sdpa=use_sdpa) for i in range(self.num_layers)])

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """``x``: ``[B, 3, H, W]`` → tuple of ``[B, C, ceil(H/16), ceil(W/16)]`` maps."""
        B = x.shape[0]
        x, (h, w) = self._embed(x)  # [B, h*w, C]
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, (h, w))
            if i in self.out_indices:
                outs.append(x.transpose(1, 2).reshape(B, self.embed_dims, h, w).contiguous())
        return tuple(outs)


def _check_out_indices(out_indices: Union[int, Sequence[int]], num_layers: int) -> Tuple[int, ...]:
    """Normalise ``out_indices`` (negatives allowed) or raise a clear error."""
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    out_indices = list(out_indices)
    if not out_indices:
        raise ValueError('out_indices is empty; give at least one block index')
    bad = [i for i in out_indices if not -num_layers <= int(i) < num_layers]
    if bad:
        raise ValueError(
            f'out_indices {out_indices} refer to blocks that do not exist: {bad}. The backbone '
            f'has num_layers={num_layers} blocks (valid indices 0..{num_layers - 1} or '
            f'-{num_layers}..-1); e.g. [3, 5, 7, 11] for ViT-B, [7, 11, 15, 23] for ViT-L.')
    return tuple(sorted({int(i) % num_layers for i in out_indices}))


__all__ = ['ADDPViTDet', 'ADDPDenseViTBase', 'ADDPWindowBlock', 'ADDPRelPosAttention',
           'decomposed_rel_pos_bias']
