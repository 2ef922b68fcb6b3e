"""Frozen VQGAN tokenizer used by ADDP (and MAGE).

References:
    - ADDP: Tian et al., "ADDP: Learning General Representations for Image
      Recognition and Generation with Alternating Denoising Diffusion
      Process", ICLR 2024.
    - MAGE: Li et al., "MAGE: MAsked Generative Encoder to Unify
      Representation Learning and Image Synthesis", CVPR 2023.
    - MaskGIT (the JAX VQGAN this tokenizer was ported from) and
      taming-transformers (the key layout of the released checkpoint).

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

Checkpoint formats accepted by :meth:`VQGANTokenizer.load_checkpoint` (all read
with ``torch.load(weights_only=True)`` through
:func:`addp_mm.utils.checkpoint.load_external_state_dict`):

* the official taming/MAGE file ``vqgan_jax_strongaug.ckpt`` with the tensors
  at the top level or under ``'state_dict'`` (``encoder.*``, ``decoder.*``,
  ``quantize.embedding.weight``); ``loss.*`` entries (discriminator /
  perceptual-loss weights of taming training checkpoints) are documented as
  unused and dropped;
* an mmengine checkpoint written by ``tools/model_converters/vqgan_to_mm.py``
  (``{'state_dict': ..., 'meta': ...}``);
* files where the VQGAN sits under a prefix: ``tokenizer.`` (a converted ADDP
  checkpoint) or ``vqgan.`` (the official MAGE / ADDP releases, which embed a
  copy of the tokenizer). Only the keys under that prefix are read, and the
  choice is logged. This happens only when the user points the *tokenizer's*
  ``checkpoint`` at such a file; the token predictor never loads ``vqgan.*``
  (see :mod:`addp_mm.models.target_generators.mage_predictor`).
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.models.utils.performance import (AUTO, FROZEN_DTYPES, LazyCompiled,
                                              compile_enabled, frozen_precision, maybe_compile,
                                              parse_frozen_dtype, resolve_frozen_dtype, swish,
                                              swish_fused)
from addp_mm.registry import register_model
from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                      load_external_state_dict)

__all__ = ['VQGANTokenizer', 'convert_vqgan_state_dict', 'VQGAN_UNUSED_PREFIXES', 'FROZEN_DTYPES',
           'parse_frozen_dtype', 'frozen_precision', 'maybe_compile']

#: Key prefixes of an official VQGAN file that no computation reads
#: (training-loss / discriminator weights of taming checkpoints).
VQGAN_UNUSED_PREFIXES: Tuple[str, ...] = ('loss.', )

#: Prefixes under which a VQGAN may be stored inside a larger checkpoint, tried
#: in order when the file has no top-level ``encoder.*`` keys.
_VQGAN_CONTAINER_PREFIXES: Tuple[str, ...] = ('tokenizer.', 'vqgan.')


def convert_vqgan_state_dict(
        state_dict: Dict[str, Tensor],
        prefix: Optional[str] = None) -> Tuple[Dict[str, Tensor], List[str], str]:
    """Map an official (or converted) VQGAN state dict onto
    :class:`VQGANTokenizer` keys.

    The official key names are kept one to one, so the mapping only selects
    the right sub-dict and drops documented-unused entries.

    Args:
        state_dict (dict[str, Tensor]): The flat state dict of the file (after
            unwrapping ``'state_dict'``/``'model'``).
        prefix (str, optional): Prefix of the VQGAN keys inside the file, e.g.
            ``'vqgan.'``. ``None`` detects it: top-level ``encoder.*`` keys, else
            ``'tokenizer.'`` (our ADDP checkpoints), else ``'vqgan.'`` (the MAGE
            and ADDP releases). Defaults to None.

    Returns:
        tuple: ``(converted, dropped, prefix)``: the tokenizer state dict, the
        names of the documented-unused keys that were dropped, and the prefix
        that was used.

    Raises:
        CheckpointError: If no VQGAN keys are found.
    """
    if prefix is None:
        if any(k.startswith('encoder.') for k in state_dict):
            prefix = ''
        else:
            prefix = next((p for p in _VQGAN_CONTAINER_PREFIXES
                           if any(k.startswith(p + 'encoder.') for k in state_dict)), None)
            if prefix is None:
                raise CheckpointError(
                    'no VQGAN weights found: expected keys "encoder.*", "decoder.*", '
                    '"quantize.embedding.weight" at the top level (or under "state_dict", '
                    f'"tokenizer." or "vqgan."); the first keys are {list(state_dict)[:5]}. '
                    'Pass the VQGAN file (vqgan_jax_strongaug.ckpt) as the tokenizer checkpoint.')
    converted, dropped = {}, []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue  # another model's weights inside a bigger file
        name = key[len(prefix):]
        if name.startswith(VQGAN_UNUSED_PREFIXES):
            dropped.append(key)
            continue
        converted[name] = value
    return converted, dropped, prefix


# ---------------------------------------------------------------------------
# Building blocks (names follow the official checkpoint keys)
# ---------------------------------------------------------------------------
#: kept for compatibility: the activations and precision helpers live in
#: :mod:`addp_mm.models.utils.performance`
_swish, _swish_fused = swish, swish_fused


class _ResBlock(nn.Module):
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
        act = _swish_fused if self.fused_act else _swish
        r = self.conv1(act(self.norm1(x)))
        r = self.conv2(act(self.norm2(r)))
        if self.in_channels != self.out_channels:
            return self.nin_shortcut(r) + r
        return x + r


class _Upsample(nn.Module):
    """Nearest 2x up-sampling followed by a 3x3 convolution (with bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class _Level(nn.Module):
    """One resolution level: ``block`` (ModuleList) and optional ``upsample``."""

    def __init__(self, blocks: List[nn.Module], upsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if upsample is not None:
            self.upsample = upsample


class _Mid(nn.Module):
    """The two middle residual blocks (``block_1``, ``block_2``)."""

    def __init__(self, channels: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.block_1 = _ResBlock(channels, channels, num_groups, eps)
        self.block_2 = _ResBlock(channels, channels, num_groups, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x))


class _Encoder(nn.Module):

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
                blocks.append(_ResBlock(block_in, block_out, num_groups, eps))
                block_in = block_out
            self.down.append(_Level(blocks))
        self.mid = _Mid(block_out, num_groups, eps)
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
        act = _swish_fused if self.fused_act else _swish
        return self.conv_out(act(self.norm_out(h)))  # [B, z, H/f, W/f]


class _Decoder(nn.Module):

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 out_channels: int, z_channels: int, num_groups: int, eps: float) -> None:
        super().__init__()
        self.num_levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in, num_groups, eps)
        levels: List[Optional[_Level]] = [None] * self.num_levels
        for level in reversed(range(self.num_levels)):
            block_out = ch * ch_mult[level]
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(block_in, block_out, num_groups, eps))
                block_in = block_out
            levels[level] = _Level(blocks, _Upsample(block_in) if level != 0 else None)
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
        act = _swish_fused if self.fused_act else _swish
        return self.conv_out(act(self.norm_out(h)))  # [B, 3, H, W]


class _Quantize(nn.Module):
    """Holds the codebook as ``embedding.weight`` [num_embeddings, embed_dim]."""

    def __init__(self, num_embeddings: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)


# ---------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------
@register_model
class VQGANTokenizer(BaseModule):
    """Frozen MaskGIT-style VQGAN tokenizer (encoder, quantiser, decoder).

    Parameters are frozen (``requires_grad=False``) and the module stays in
    eval mode whatever ``train()`` a parent calls. Weights come from
    ``checkpoint``, loaded in :meth:`init_weights` (never in ``__init__``).

    Args:
        ch (int): Base channel count. Defaults to 128.
        ch_mult (Sequence[int]): Channel multiplier per level; the down-sampling
            factor is ``2 ** (len(ch_mult) - 1)``. Defaults to ``(1, 1, 2, 2, 4)``.
        num_res_blocks (int): Residual blocks per level. Defaults to 2.
        in_channels (int): Image channels. Defaults to 3.
        out_channels (int): Reconstructed image channels. Defaults to 3.
        z_channels (int): Encoder output width; must equal ``embed_dim`` since
            there is no ``quant_conv``. Defaults to 256.
        num_embeddings (int): Codebook size. Defaults to 1024.
        embed_dim (int): Codebook vector size. Defaults to 256.
        norm_num_groups (int): GroupNorm groups. Defaults to 32.
        norm_eps (float): GroupNorm epsilon. Defaults to 1e-6.
        checkpoint (str, optional): Path of the VQGAN weights (official
            ``vqgan_jax_strongaug.ckpt`` or a converted file; see the module
            docstring), loaded strictly in :meth:`init_weights`. Defaults to None
            (random weights, for tests and benchmarks).
        channels_last (bool | str): Performance switch: keep the convolution
            weights and activations in channels-last layout (faster oneDNN
            kernels on CPUs). ``'auto'`` uses it on CPUs only: CUDA's GroupNorm
            has no channels-last kernel, so there every norm would transpose
            its input to NCHW and the next convolution back. Same maths; fp32
            results differ from the default layout only by kernel rounding
            (~1e-6 relative). Defaults to False.
        frozen_dtype (str, optional): Performance switch: precision of
            :meth:`encode` / :meth:`decode`. None follows the caller's autocast
            state (the reference behaviour); ``'fp32'`` forces float32 even
            under autocast; ``'bf16'`` (or ``'fp16'``) runs the convolutions
            under ``torch.autocast`` on the input's device; ``'auto'`` is bf16
            while the caller runs under autocast on hardware with native bf16
            (:func:`~addp_mm.models.utils.performance.resolve_frozen_dtype`),
            else None. The nearest-code search and the returned tensors stay
            float32. Defaults to None.
        fused_act (bool): Performance switch: ``F.silu`` (in place when no
            graph is recorded) instead of ``x * sigmoid(x)``; same function,
            last-bit differences. Defaults to False.
        compile (bool | str | dict): Performance switch: run the encoder and
            decoder through ``torch.compile`` (a dict is passed as its keyword
            arguments, e.g. ``dict(mode='reduce-overhead')`` for CUDA graphs;
            ``'auto'`` compiles on CUDA only). Compiled lazily on the first
            call with static shapes (``dynamic=False``); if compiling fails the
            module runs eagerly (logged once). Defaults to False.
        init_cfg (dict | list[dict], optional): mmengine init config. Defaults
            to None.
    """

    def __init__(self,
                 ch: int = 128,
                 ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2,
                 in_channels: int = 3,
                 out_channels: int = 3,
                 z_channels: int = 256,
                 num_embeddings: int = 1024,
                 embed_dim: int = 256,
                 norm_num_groups: int = 32,
                 norm_eps: float = 1e-6,
                 checkpoint: Optional[str] = None,
                 channels_last: Union[bool, str] = False,
                 frozen_dtype: Optional[str] = None,
                 fused_act: bool = False,
                 compile: Union[bool, str, dict] = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if z_channels != embed_dim:
            raise ValueError(
                f'z_channels ({z_channels}) must equal embed_dim ({embed_dim}): this VQGAN has '
                'no quant_conv, the encoder output is compared with the codebook directly.')
        ch_mult = tuple(int(m) for m in ch_mult)
        if len(ch_mult) < 1 or num_res_blocks < 1:
            raise ValueError('ch_mult needs at least one level and num_res_blocks >= 1, '
                             f'got ch_mult={ch_mult}, num_res_blocks={num_res_blocks}')
        for width in {ch * m for m in ch_mult} | {ch}:
            if width % norm_num_groups:
                raise ValueError(f'channel count {width} (ch={ch} x ch_mult) is not divisible by '
                                 f'norm_num_groups={norm_num_groups}')
        self.ch = ch
        self.ch_mult = ch_mult
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_embeddings = num_embeddings
        self.embed_dim = embed_dim
        self.downsample_factor = 2**(len(ch_mult) - 1)
        self.checkpoint = checkpoint

        self.encoder = _Encoder(ch, ch_mult, num_res_blocks, in_channels, z_channels,
                                norm_num_groups, norm_eps)
        self.decoder = _Decoder(ch, ch_mult, num_res_blocks, out_channels, z_channels,
                                norm_num_groups, norm_eps)
        self.quantize = _Quantize(num_embeddings, embed_dim)
        self._freeze()
        # performance switches (none changes the state dict)
        self.frozen_dtype = parse_frozen_dtype(frozen_dtype)
        self.compile = compile
        self._compiled: Dict[str, Callable] = {}  # plain dict: not registered as submodules
        self.channels_last = False
        self.set_channels_last(channels_last)
        self.set_fused_act(fused_act)

    # ------------------------------------------------------ performance switches
    def set_channels_last(self, enabled: Union[bool, str]) -> None:
        """Set the channels-last switch (``True``, ``False`` or ``'auto'``)
        and lay out the conv weights for the CPU (``'auto'`` is resolved again
        for the input's device on every call)."""
        if enabled != AUTO:
            enabled = bool(enabled)
        self.channels_last = enabled
        self._layout_weights(self._use_channels_last('cpu'))

    def _use_channels_last(self, device_type: str) -> bool:
        if self.channels_last == AUTO:
            return device_type == 'cpu'
        return bool(self.channels_last)

    def _layout_weights(self, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)

    def set_fused_act(self, enabled: bool) -> None:
        """Switch the fused SiLU on or off (see ``fused_act``)."""
        self.fused_act = bool(enabled)
        for m in self.modules():
            if hasattr(m, 'fused_act') and m is not self:
                m.fused_act = self.fused_act

    def set_frozen_dtype(self, frozen_dtype: Optional[str]) -> None:
        """Change ``frozen_dtype`` at run time (see the class docstring)."""
        self.frozen_dtype = parse_frozen_dtype(frozen_dtype)

    def _run(self, name: str, x: Tensor) -> Tensor:
        """Run ``self.encoder`` / ``self.decoder`` with the switches applied."""
        module = getattr(self, name)
        device_type = x.device.type
        channels_last = self._use_channels_last(device_type)
        # conv weights follow the layout (e.g. weights replaced, or 'auto' on a new device)
        if module.conv_in.weight.is_contiguous(memory_format=torch.channels_last) != channels_last \
                or module.conv_in.weight.is_contiguous() == channels_last:
            self._layout_weights(channels_last)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fn = module
        if compile_enabled(self.compile, device_type):
            if name not in self._compiled:
                self._compiled[name] = LazyCompiled(module, self.compile, f'VQGAN {name}',
                                                    defaults=dict(dynamic=False))
            fn = self._compiled[name]
        dtype = resolve_frozen_dtype(self.frozen_dtype, device_type)
        if dtype is None:
            out = fn(x)
        else:
            with frozen_precision(dtype, device_type):
                out = fn(x)
            out = out.float()
        if channels_last:
            out = out.contiguous()
        return out

    # ------------------------------------------------------------------ frozen
    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> 'VQGANTokenizer':
        """Stay in eval mode: the tokenizer is frozen (``mode`` is ignored)."""
        return super().train(False)

    @property
    def codebook(self) -> Tensor:
        """The codebook ``[num_embeddings, embed_dim]``."""
        return self.quantize.embedding.weight

    # ----------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Apply ``init_cfg`` then, if ``checkpoint`` is set, load it strictly."""
        super().init_weights()
        if self.checkpoint is not None:
            self.load_checkpoint(self.checkpoint)

    def load_checkpoint(self, path: str, prefix: Optional[str] = None) -> None:
        """Load VQGAN weights from ``path`` with strict key and shape checks.

        Args:
            path (str): Official or converted file (see the module docstring).
            prefix (str, optional): Prefix of the VQGAN keys in the file;
                detected when None. Defaults to None.

        Raises:
            CheckpointError: If the file is missing/unreadable, or its keys or
                shapes do not match this tokenizer's configured sizes (the
                first mismatching keys and shapes are named).
        """
        state_dict = load_external_state_dict(path, keys=('state_dict', 'model'))
        self.load_official_state_dict(state_dict, source=path, prefix=prefix)

    def load_official_state_dict(self, state_dict: Dict[str, Tensor], source: str = 'state dict',
                                 prefix: Optional[str] = None) -> None:
        """Convert (:func:`convert_vqgan_state_dict`), check strictly and load
        an already-read official/converted state dict.

        Args:
            state_dict (dict[str, Tensor]): Flat state dict of the file.
            source (str): Name used in messages. Defaults to ``'state dict'``.
            prefix (str, optional): See :meth:`load_checkpoint`. Defaults to None.
        """
        converted, dropped, used_prefix = convert_vqgan_state_dict(state_dict, prefix)
        check_state_dict(self, converted, source=repr(source))
        self.load_state_dict(converted, strict=True)
        self._freeze()
        msg = f'VQGANTokenizer: loaded {len(converted)} tensors from {source}'
        if used_prefix:
            msg += f' (keys under "{used_prefix}")'
        if dropped:
            msg += f'; dropped {len(dropped)} documented-unused keys ({VQGAN_UNUSED_PREFIXES})'
        print_log(msg, logger='current')

    # ------------------------------------------------------------- validation
    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4:
            raise ValueError(f'VQGANTokenizer expects images of shape [B, {self.in_channels}, H, W], '
                             f'got shape {tuple(images.shape)}')
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f'VQGANTokenizer expects {self.in_channels}-channel images in [0, 1], got '
                f'{images.shape[1]} channels (shape {tuple(images.shape)}); convert grey/RGBA '
                'images to RGB first.')
        h, w = images.shape[-2:]
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(
                f'image size {h}x{w} is not divisible by the tokenizer down-sampling factor {f}; '
                f'resize or crop to a multiple of {f} (e.g. {max(f, h // f * f)}x{max(f, w // f * f)}).')

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dtype in (torch.bool, ) or indices.is_floating_point() or indices.is_complex():
            raise TypeError(f'token indices must be an integer tensor, got {indices.dtype}')
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(
                f'token indices must lie in [0, {self.num_embeddings - 1}] (codebook size '
                f'{self.num_embeddings}); got min {int(indices.min())}, max {int(indices.max())}. '
                'Class ids / the mask id of the MAGE vocabulary are not codebook entries.')

    def _grid(self, num: int, grid: Optional[Tuple[int, int]]) -> Tuple[int, int]:
        if grid is not None:
            gh, gw = int(grid[0]), int(grid[1])
            if gh * gw != num:
                raise ValueError(f'grid {gh}x{gw} does not hold {num} tokens')
            return gh, gw
        side = math.isqrt(num)
        if side * side != num:
            raise ValueError(f'{num} tokens do not form a square grid; pass grid=(h, w)')
        return side, side

    # ------------------------------------------------------------------- API
    def encode(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """Tokenize images.

        Args:
            images (Tensor): ``[B, C, H, W]`` in [0, 1] (not normalised); H and W
                must be multiples of :attr:`downsample_factor`.

        Returns:
            tuple[Tensor, Tensor]: ``indices`` LongTensor ``[B, h*w]`` in raster
            order (position ``p = w_grid * row + col``) and the quantised map
            ``quant`` ``[B, embed_dim, h, w]`` (exact codebook rows).
        """
        self._check_images(images)
        h = self._run('encoder', images)  # [B, C, h, w]
        indices = self.quantize_latents(h)  # [B, h*w]
        # the ids come from the codebook search: no range check (it would sync the device)
        return indices, self.embed(indices, grid=h.shape[-2:], check=False)

    def quantize_latents(self, latents: Tensor) -> Tensor:
        """Nearest codebook entry (squared L2, fp32, lowest id on ties).

        Args:
            latents (Tensor): Encoder output ``[B, embed_dim, h, w]``.

        Returns:
            Tensor: LongTensor ``[B, h*w]`` of codebook ids in raster order.
        """
        B, C, gh, gw = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            flat = latents.float().permute(0, 2, 3, 1).reshape(-1, C)  # [B*h*w, C]
            codebook = self.codebook.float()  # [K, C]
            dist = (flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None]
                    - 2 * flat @ codebook.t())  # [B*h*w, K]
            indices = dist.argmin(dim=1)
        return indices.view(B, gh * gw)

    def embed(self, indices: Tensor, grid: Optional[Tuple[int, int]] = None,
              check: bool = True) -> Tensor:
        """Codebook lookup.

        Args:
            indices (Tensor): Integer ids ``[B, N]`` (raster order) or ``[B, h, w]``.
            grid (tuple[int, int], optional): ``(h, w)`` for ``[B, N]`` input;
                a square grid is assumed when None. Defaults to None.
            check (bool): Check that the ids are codebook entries (reads the
                values, i.e. waits for the device). Defaults to True.

        Returns:
            Tensor: ``[B, embed_dim, h, w]``.
        """
        if check:
            self._check_indices(indices)
        if indices.dim() == 3:
            gh, gw = indices.shape[1:]
        elif indices.dim() == 2:
            gh, gw = self._grid(indices.shape[1], grid)
        else:
            raise ValueError(f'indices must be [B, N] or [B, h, w], got shape {tuple(indices.shape)}')
        B = indices.shape[0]
        quant = F.embedding(indices.reshape(B, gh * gw), self.codebook)  # [B, N, C]
        return quant.transpose(1, 2).reshape(B, self.embed_dim, gh, gw)

    def soft_embed(self, probs: Tensor, grid: Optional[Tuple[int, int]] = None) -> Tensor:
        """Expected codebook embedding ``sum_k p_k e_k``.

        Args:
            probs (Tensor): ``[B, N, num_embeddings]`` probabilities (raster order).
            grid (tuple[int, int], optional): ``(h, w)``; square when None.
                Defaults to None.

        Returns:
            Tensor: ``[B, embed_dim, h, w]``, ready for :meth:`decode`.
        """
        if probs.dim() != 3 or probs.shape[-1] != self.num_embeddings:
            raise ValueError(f'probs must be [B, N, {self.num_embeddings}], got {tuple(probs.shape)}')
        B, N, _ = probs.shape
        gh, gw = self._grid(N, grid)
        soft = probs.to(self.codebook.dtype) @ self.codebook  # [B, N, C]
        return soft.transpose(1, 2).reshape(B, self.embed_dim, gh, gw)

    def decode(self, quant: Tensor) -> Tensor:
        """Decode an embedding map (hard, soft or mixed) to pixels.

        Args:
            quant (Tensor): ``[B, embed_dim, h, w]``.

        Returns:
            Tensor: ``[B, out_channels, h*f, w*f]``, nominally in [0, 1], not
            clamped.
        """
        if quant.dim() != 4 or quant.shape[1] != self.embed_dim:
            raise ValueError(f'decode expects a latent map [B, {self.embed_dim}, h, w], '
                             f'got shape {tuple(quant.shape)}')
        return self._run('decoder', quant)

    def decode_indices(self, indices: Tensor, grid: Optional[Tuple[int, int]] = None) -> Tensor:
        """``decode(embed(indices, grid))``."""
        return self.decode(self.embed(indices, grid))

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruct ``images`` (encode, quantise, decode)."""
        _, quant = self.encode(images)
        return self.decode(quant)
