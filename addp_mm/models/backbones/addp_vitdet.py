"""``ADDPViTDetBackbone``: the ADDP encoder as a plain ViTDet backbone (COCO).

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

The window block and the relative-position attention live in
:mod:`addp_mm.models.layers.window_attention`.
"""
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn

from addp_mm.models.layers import ADDPWindowBlock, PatchEmbed, to_2tuple
from addp_mm.models.utils.encoder_checkpoint import (EncoderLayout, load_encoder_checkpoint,
                                                     load_encoder_state_dict, resolve_pretrained)
from addp_mm.models.utils.out_indices import check_out_indices
from addp_mm.registry import register_model_everywhere

_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')


@register_model_everywhere
class ADDPViTDetBackbone(BaseModule):
    """ADDP ViT as a ViTDet backbone (plain, single-scale, stride 16).

    Window attention in all blocks except ``global_attn_indexes`` (2, 5, 8, 11
    for B; 5, 11, 17, 23 for L), optional decomposed relative position bias,
    absolute position embedding kept on the pretraining grid without the cls
    position and resized to the feature map in ``forward``, linearly
    increasing drop path. No cls token and no final norm (the simple feature
    pyramid normalises its outputs). ``tokenizer_norm`` of the pretraining
    encoder is dropped by default, as ADDP's official fine-tuning does.

    Pretrained weights are loaded in :meth:`init_weights` through
    :mod:`addp_mm.models.utils.encoder_checkpoint` (our checkpoints, official
    pretraining releases and official fine-tuning files, every key accounted
    for in :attr:`pretrained_report`).

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
            ``Pretrained`` entry (``checkpoint``, optional ``prefix``, also
            inside a list) is routed to the same loader as ``pretrained``.
            Defaults to None.
    """
    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, num_layers=12, num_heads=12,
                                           global_attn_indexes=(2, 5, 8, 11))),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=1024, num_layers=24, num_heads=16,
                                            global_attn_indexes=(5, 11, 17, 23))),
    }

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
        pretrained, prefix, init_cfg = resolve_pretrained(pretrained, init_cfg, type(self).__name__)
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        self.num_heads = self.arch_settings['num_heads']
        self.mlp_ratio = self.arch_settings.get('mlp_ratio', 4.)
        self.patch_size = patch_size
        self.pos_grid = (pre[0] // patch_size, pre[1] // patch_size)
        self.pretrained = pretrained
        self.pretrained_prefix = prefix
        #: filled by :meth:`load_pretrained` (for logs and tests)
        self.pretrained_report: Optional[Dict[str, object]] = None
        # grid ceil(H / p) x ceil(W / p): inputs are zero-padded at the bottom/right
        self.patch_embed = PatchEmbed(None, patch_size, in_channels, self.embed_dims,
                                      flatten=False, dynamic_img_pad=True)
        # pretraining grid, no cls row; resized to the feature map in forward
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], self.embed_dims))
        self.tokenizer_norm = nn.LayerNorm(self.embed_dims, eps=norm_eps) \
            if use_tokenizer_norm else None
        self.pos_drop = nn.Dropout(drop_rate)
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
        self.out_indices = check_out_indices(out_indices, self.num_layers)
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList([
            ADDPWindowBlock(
                self.embed_dims, self.num_heads, self.mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, dpr[i], norm_eps,
                window_size=0 if i in self.global_attn_indexes else window_size,
                window_padding=window_padding, use_rel_pos=use_rel_pos, rel_pos_size=grid,
                use_sdpa=use_sdpa) for i in range(self.num_layers)])

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

        Returns ``[B, h*w, C]`` tokens and the grid ``(h, w)``.
        """
        x = self.patch_embed(x)  # [B, C, h, w]
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        pos = self.pos_embed
        if hw != self.pos_grid:
            pos = resize_pos_embed(pos, self.pos_grid, hw, mode='bicubic', num_extra_tokens=0)
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
            self.load_pretrained(self.pretrained, prefix=self.pretrained_prefix)
        self._addp_weights_done = True

    def encoder_layout(self) -> EncoderLayout:
        """What this backbone takes from an ADDP encoder checkpoint."""
        return EncoderLayout(
            embed_dims=self.embed_dims, num_layers=self.num_layers,
            patch_size=(self.patch_size, self.patch_size), grid=self.pos_grid, cls_token=False,
            tokenizer_norm=self.tokenizer_norm is not None, final_norm=False,
            fresh=lambda k: k.endswith(('.rel_pos_h', '.rel_pos_w')),
            fresh_reason='relative position tables, zero-initialised',
            no_cls_reason='ViTDet has no cls token (its pos-embed row is dropped too)')

    def load_encoder_state_dict(self, state_dict: Dict[str, Tensor], source: str = 'checkpoint',
                                prefix: Optional[str] = None) -> Dict[str, object]:
        """Load the ADDP encoder of an already read state dict; see
        :func:`~addp_mm.models.utils.encoder_checkpoint.load_encoder_state_dict`."""
        self.pretrained_report = load_encoder_state_dict(self, state_dict, self.encoder_layout(),
                                                         source, prefix)
        return self.pretrained_report

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> Dict[str, object]:
        """Read ``path`` (any supported ADDP format) and load its encoder."""
        self.pretrained_report = load_encoder_checkpoint(self, path, self.encoder_layout(),
                                                         prefix)
        return self.pretrained_report

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


__all__ = ['ADDPViTDetBackbone']
