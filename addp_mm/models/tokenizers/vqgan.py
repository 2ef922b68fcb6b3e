"""Frozen VQGAN tokenizer used by ADDP (and MAGE).

References:
    - ADDP: Tian et al., "ADDP: Learning General Representations for Image
      Recognition and Generation with Alternating Denoising Diffusion
      Process", ICLR 2024.
    - MAGE: Li et al., "MAGE: MAsked Generative Encoder to Unify
      Representation Learning and Image Synthesis", CVPR 2023.
    - MaskGIT (the JAX VQGAN this tokenizer was ported from) and
      taming-transformers (the key layout of the released checkpoint).

The network (its differences from a stock taming-transformers VQGAN) is
described in :mod:`addp_mm.models.tokenizers.vqgan_modules`, the checkpoint
formats :meth:`VQGANTokenizer.load_checkpoint` accepts in
:mod:`addp_mm.models.tokenizers.vqgan_checkpoint`.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.registry import register_model
from addp_mm.utils.checkpoint import CheckpointError  # noqa: F401
from addp_mm.utils.checkpoint import check_state_dict, load_external_state_dict
from addp_mm.utils.precision import (AUTO, FROZEN_DTYPES, UNSET, LazyCompiled, compile_enabled,
                                     frozen_precision, maybe_compile, parse_frozen_dtype,
                                     resolve_frozen_dtype)
from .vqgan_checkpoint import _VQGAN_CONTAINER_PREFIXES  # noqa: F401
from .vqgan_checkpoint import VQGAN_UNUSED_PREFIXES, convert_vqgan_state_dict
from .vqgan_modules import (VQGANDecoder, VQGANEncoder, VQGANLevel, VQGANMid, VQGANQuantize,
                            VQGANResBlock, VQGANUpsample)

__all__ = ['VQGANTokenizer', 'convert_vqgan_state_dict', 'VQGAN_UNUSED_PREFIXES', 'FROZEN_DTYPES',
           'parse_frozen_dtype', 'frozen_precision', 'maybe_compile']

#: kept for compatibility: the precision helpers live in :mod:`addp_mm.utils.precision`, the
#: building blocks and activations in :mod:`addp_mm.models.tokenizers.vqgan_modules`
_ResBlock, _Upsample, _Level, _Mid = VQGANResBlock, VQGANUpsample, VQGANLevel, VQGANMid
_Encoder, _Decoder, _Quantize = VQGANEncoder, VQGANDecoder, VQGANQuantize


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
            (:func:`~addp_mm.utils.precision.resolve_frozen_dtype`),
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

        self.encoder = VQGANEncoder(ch, ch_mult, num_res_blocks, in_channels, z_channels,
                                    norm_num_groups, norm_eps)
        self.decoder = VQGANDecoder(ch, ch_mult, num_res_blocks, out_channels, z_channels,
                                    norm_num_groups, norm_eps)
        self.quantize = VQGANQuantize(num_embeddings, embed_dim)
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

    def set_performance(self, channels_last=UNSET, fused_act=UNSET, frozen_dtype=UNSET,
                        compile=UNSET, **others) -> None:
        """Apply the switches of
        :func:`~addp_mm.models.utils.performance.configure_performance` that
        concern the tokenizer; ``UNSET`` ones stay as they are, ``others``
        (switches of other modules) are ignored."""
        if channels_last is not UNSET:
            self.set_channels_last(channels_last)
        if fused_act is not UNSET:
            self.set_fused_act(bool(fused_act))
        if frozen_dtype is not UNSET:
            self.set_frozen_dtype(frozen_dtype)
        if compile is not UNSET:
            self.compile, self._compiled = compile, {}

    def performance_state(self) -> Dict[str, object]:
        """The current values of the switches :meth:`set_performance` sets."""
        return dict(channels_last=self.channels_last, fused_act=self.fused_act,
                    frozen_dtype=self.frozen_dtype, compile=self.compile)

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
