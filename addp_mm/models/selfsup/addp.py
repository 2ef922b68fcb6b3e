"""ADDP pretraining: Alternating Denoising Diffusion Process (ICLR 2024).

One training iteration (spec §1, reference ``models_addp.py``):

1. ``z0 = VQ-Enc(x0)``: token ids of the clean images (frozen VQGAN, raw [0,1]
   pixels).
2. Two nested masks ``m_t ⊆ m_{t+1}`` (:class:`ADDPMaskSampler`).
3. The frozen token predictor runs twice: on ``z0`` masked by ``m_{t+1}``
   (probabilities ``P_next``) and by ``m_t`` (``P_t``, the training target).
4. Token-to-pixel decoding: ``x_t = VQ-Dec(where(m_t, P_next @ codebook,
   codebook[z0]))``; soft (expected) embeddings at unreliable positions, hard
   codebook entries elsewhere.
5. ``x_t`` is clamped to [0,1], ImageNet-normalised and encoded by
   :class:`ADDPViT` (all 257 tokens, no dropping).
6. :class:`ADDPDecoder` replaces the cls slot and the masked slots by a mask
   token, appends embeddings of the reliable ground-truth tokens and predicts
   logits over the whole vocabulary with an MLM head tied to the *detached*
   token embedding.
7. :class:`ADDPLossHead`: soft-target cross-entropy with label smoothing 0.1
   against ``P_t`` (zero-padded to the vocabulary), averaged over ``m_t``.

Parameter names follow the official release (timm names) so converted official
checkpoints load one-to-one (``tools/model_converters/addp_to_mm.py``). The
official model also allocates ``pos_token_embed``, ``pos_mask_embed``,
``decoder_pos_embed`` and ``decoder_pred`` that no computation reads; they are
deliberately not created here (so DDP needs no ``find_unused_parameters``) and
the converter drops them as documented-unused.
"""
import inspect
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from addp_mm.models.layers import Block, MlmLayer, init_linear_layernorm, to_2tuple
from addp_mm.models.utils.performance import PRESETS, configure_performance
from addp_mm.models.utils.pixels import IMAGENET_MEAN, IMAGENET_STD, unit_rgb_preprocessor
from addp_mm.registry import register_model
from .mask_schedule import ADDPMaskSampler




class _PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (``proj`` = conv k=s=patch, with bias)."""

    def __init__(self, patch_size: Tuple[int, int], in_channels: int, embed_dims: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size,
                              stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, h*w, D]
        return self.proj(x).flatten(2).transpose(1, 2)




class ADDPViT(BaseModule):
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
        init_cfg (dict, optional): mmengine init config. Defaults to None.
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
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f'img_size {self.img_size} is not divisible by patch_size {self.patch_size}')
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dims = embed_dims
        self.num_layers = num_layers

        self.patch_embed = _PatchEmbed(self.patch_size, in_channels, embed_dims)
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
        """Reference init unless a ``Pretrained`` init_cfg is given."""
        super().init_weights()
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
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


class ADDPDecoder(BaseModule):
    """ADDP's pixel-to-token decoder (the neck) with its tied MLM head.

    Sequence layout (length ``1 + N + n_vis``): slot 0 and every masked grid
    slot hold ``mask_token``; visible grid slots hold ``decoder_embed`` of the
    encoder features; then one appended slot per visible position ``p`` (in
    increasing ``p``) holding ``token_emb[z[p]]``. Position tables:
    ``decoder_pos_embed_learned`` (slot 0 and visible slots),
    ``decoder_pos_mask_embed`` (masked slots) and
    ``decoder_pos_token_embed[1 + p]`` (appended slots). Output logits over the
    whole vocabulary ``num_codes + num_classes + 1`` from
    ``MlmLayer(x, token_emb.weight.detach())``.

    Args:
        in_channels (int): Encoder width. Defaults to 768.
        embed_dims (int): Decoder width; also the token-embedding width (the
            reliable-token embeddings are appended to the decoder sequence).
            Defaults to 768.
        num_layers (int): Decoder blocks. Defaults to 8.
        num_heads (int): Decoder heads. Defaults to 16.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.
        drop_rate (float): Dropout on proj/MLP outputs. Defaults to 0.1.
        attn_drop_rate (float): Dropout on attention weights. Defaults to 0.1.
        num_tokens (int, optional): Token-grid size ``h*w``. Filled in by
            :class:`ADDP` from the encoder when None. Defaults to None.
        num_codes (int, optional): Codebook size. Filled in by :class:`ADDP`
            from the tokenizer when None. Defaults to None.
        num_classes (int): Class-id slots of the vocabulary (unused ids kept for
            checkpoint compatibility). Defaults to 1000.
        norm_eps (float): Block/final LayerNorm epsilon. Defaults to 1e-6.
        mlm_ln_eps (float): MLM-head LayerNorm epsilon. Defaults to 1e-5.
        use_sdpa (bool): Fused attention. Defaults to False.
        use_reliable_tokens (bool): Append the embeddings of the reliable
            (visible ground-truth) token ids to the decoder sequence, as the
            reference does. False is the paper's "no reliable-token
            conditioning" ablation: the prediction then sees the visible tokens
            only through the encoder's reading of the pixels ``x_t``. The
            parameters are allocated either way, so checkpoints load in both
            settings; without conditioning, ``token_emb`` (read detached by the
            MLM head) and ``decoder_pos_token_embed`` stay frozen at their
            initialisation. Defaults to True.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int = 768,
                 embed_dims: int = 768,
                 num_layers: int = 8,
                 num_heads: int = 16,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.1,
                 attn_drop_rate: float = 0.1,
                 num_tokens: Optional[int] = None,
                 num_codes: Optional[int] = None,
                 num_classes: int = 1000,
                 norm_eps: float = 1e-6,
                 mlm_ln_eps: float = 1e-5,
                 use_sdpa: bool = False,
                 use_reliable_tokens: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_tokens is None or num_codes is None:
            raise ValueError('ADDPDecoder needs num_tokens and num_codes; build it through ADDP, '
                             'which fills them from the encoder grid and the tokenizer codebook.')
        self.num_tokens = num_tokens
        self.num_codes = num_codes
        self.num_classes = num_classes
        self.vocab_size = num_codes + num_classes + 1
        self.mask_id = self.vocab_size - 1
        self.embed_dims = embed_dims
        self.use_reliable_tokens = use_reliable_tokens

        self.decoder_embed = nn.Linear(in_channels, embed_dims)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.decoder_pos_mask_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.decoder_pos_token_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.decoder_blocks = nn.ModuleList([
            Block(embed_dims, num_heads, mlp_ratio, qkv_bias=True, drop=drop_rate,
                  attn_drop=attn_drop_rate, norm_eps=norm_eps, use_sdpa=use_sdpa)
            for _ in range(num_layers)])
        self.decoder_norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.token_emb = nn.Embedding(self.vocab_size, embed_dims)
        self.mlm_layer = MlmLayer(embed_dims, embed_dims, self.vocab_size, ln_eps=mlm_ln_eps)
        if not use_reliable_tokens:
            # only the appended slots read these; without them they would get no
            # gradient (the MLM head reads token_emb detached), which DDP rejects
            self.token_emb.weight.requires_grad_(False)
            self.decoder_pos_token_embed.requires_grad_(False)

    def init_weights(self) -> None:
        """Reference init unless a ``Pretrained`` init_cfg is given."""
        super().init_weights()
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            return
        for p in (self.decoder_pos_embed_learned, self.decoder_pos_mask_embed,
                  self.decoder_pos_token_embed, self.mask_token, self.token_emb.weight):
            nn.init.normal_(p, std=.02)
        self.apply(init_linear_layernorm)
        nn.init.zeros_(self.mlm_layer.bias)

    def forward(self, latent: Optional[Tensor], tokens: Tensor, mask: Tensor,
                num_visible: Optional[int] = None, pad_to: Optional[int] = None) -> Tensor:
        """Predict logits for every decoder slot.

        Args:
            latent (Tensor, optional): Encoder output ``[B, 1+N, D_enc]``. May
                be None only when every position is masked (it would be
                discarded anyway).
            tokens (Tensor): Token ids ``[B, N]``; only visible ids are read.
            mask (Tensor): ``[B, N]``, 1/True = masked. Every sample must have
                the same number of visible positions (unless ``pad_to``).
            num_visible (int, optional): The number of visible positions per
                sample when the caller knows it (saves reading it from the
                device). Defaults to None.
            pad_to (int, optional): Performance: append exactly ``pad_to``
                reliable-token slots, the visible ones first and then masked
                (ignored) ones hidden from attention by a key mask, so the
                sequence length does not depend on the mask. Must be at least
                the number of visible positions of every sample. Defaults to
                None (``n_vis`` slots).

        Returns:
            Tensor: Logits ``[B, 1 + N + n_vis, vocab_size]`` (``1 + N +
            pad_to`` slots with ``pad_to``; ``[B, 1 + N, vocab_size]`` without
            reliable-token conditioning); slot ``1+p`` is grid position ``p``.
        """
        B, N = tokens.shape
        if N != self.num_tokens:
            raise ValueError(f'got {N} tokens, the decoder was built for {self.num_tokens}')
        mask = mask.bool()
        padded = pad_to is not None and latent is not None and self.use_reliable_tokens
        if padded:
            if not 0 <= pad_to <= N:
                raise ValueError(f'pad_to must be in [0, {N}], got {pad_to}')
            n_vis = int(pad_to)
        elif num_visible is not None:
            n_vis = int(num_visible)
        else:
            n_vis_per = (~mask).sum(dim=1)
            n_vis = int(n_vis_per[0].item()) if B else 0
            if B and not bool((n_vis_per == n_vis).all()):
                raise ValueError('every sample in the batch must have the same number of visible '
                                 f'tokens (got {n_vis_per.tolist()}); ADDP draws one mask ratio per '
                                 'batch.')
        mask_with_cls = torch.cat([mask.new_ones(B, 1), mask], dim=1)  # cls slot -> mask token
        mask_tok = self.mask_token.expand(B, N + 1, -1)
        if latent is None:
            if n_vis:
                raise ValueError('latent=None is only allowed when every position is masked')
            x = mask_tok
        else:
            x = self.decoder_embed(latent)  # [B, 1+N, Dd]
            x = torch.where(mask_with_cls.unsqueeze(-1), mask_tok.to(x.dtype), x)
        # the cls slot is "not masked" for the position tables
        pos_mask = torch.cat([mask.new_zeros(B, 1), mask], dim=1).unsqueeze(-1)
        pos = torch.where(pos_mask, self.decoder_pos_mask_embed, self.decoder_pos_embed_learned)
        x = x + pos

        attn_mask = None
        if self.use_reliable_tokens:  # also when n_vis = 0: keeps the tables in the graph (DDP)
            # appended reliable-token embeddings, visible positions in increasing order
            vis_idx = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :n_vis]
            vis_ids = torch.gather(tokens, 1, vis_idx)  # [B, n_vis]
            tok = self.token_emb(vis_ids)  # [B, n_vis, Dd]
            tok_pos = self.decoder_pos_token_embed[0, 1:][vis_idx]  # [B, n_vis, Dd]
            x = torch.cat([x, (tok + tok_pos).to(x.dtype)], dim=1)  # [B, 1+N+n_vis, Dd]
            if padded:
                # keys: every grid slot, and the appended slots of visible positions
                keep = torch.cat([mask.new_ones(B, 1 + N), ~torch.gather(mask, 1, vis_idx)], dim=1)
                attn_mask = keep[:, None, None, :]  # [B, 1, 1, 1+N+pad_to]
        return self._blocks_fn(x, attn_mask)

    def _blocks(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """Blocks → norm → tied MLM head (``[B, L, Dd]`` → ``[B, L, V]``)."""
        for blk in self.decoder_blocks:
            x = blk(x, attn_mask)
        x = self.decoder_norm(x)
        return self.mlm_layer(x, self.token_emb.weight.detach())

    def _blocks_fn(self, x: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
        compiled = self.__dict__.get('_compiled_blocks')
        return compiled(x, attn_mask) if compiled is not None else self._blocks(x, attn_mask)


class ADDPLossHead(BaseModule):
    """Soft-target cross-entropy with label smoothing on masked positions.

    ``ℓ_p = −Σ_c [(1−ε)·q_c + ε/V] · log_softmax(logits_p)_c`` where ``q`` is
    the target distribution over the codebook zero-padded to the ``V`` logits;
    ``loss = Σ m·ℓ / Σ m``. Computed in float32.

    Args:
        label_smoothing (float): ε. Defaults to 0.1.
        loss_weight (float): Multiplier. Defaults to 1.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, label_smoothing: float = 0.1, loss_weight: float = 1.,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.label_smoothing = label_smoothing
        self.loss_weight = loss_weight

    def loss(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Label-smoothed soft-target cross-entropy averaged over ``mask``.

        Args:
            logits (Tensor): ``[B, N, V]`` at the grid slots.
            target (Tensor): ``[B, N, K]`` probabilities, ``K <= V``.
            mask (Tensor): ``[B, N]``, 1 = masked (enters the loss).

        Returns:
            Tensor: Scalar loss.
        """
        B, N, V = logits.shape
        K = target.shape[-1]
        if K > V:
            raise ValueError(f'target has {K} classes but the logits only {V}')
        target = F.pad(target.float(), (0, V - K))
        loss = F.cross_entropy(logits.float().reshape(B * N, V), target.reshape(B * N, V),
                               reduction='none', label_smoothing=self.label_smoothing)
        mask = mask.float().reshape(B * N)
        return self.loss_weight * (loss * mask).sum() / mask.sum().clamp_min(1.)


def _ckpt_path(cfg_or_module: Union[dict, nn.Module]) -> Optional[str]:
    """The ``checkpoint`` of a frozen part, given as a config or a module."""
    if isinstance(cfg_or_module, dict):
        return cfg_or_module.get('checkpoint')
    return getattr(cfg_or_module, 'checkpoint', None)


def _performance_switches(performance: Optional[Union[str, dict]]) -> dict:
    """Resolve ``ADDP(performance=...)`` to a switch dict, with clear errors."""
    if performance is None:
        return {}
    if isinstance(performance, str):
        if performance not in PRESETS:
            raise ValueError(f'unknown performance preset {performance!r}; choose one of '
                             f'{sorted(PRESETS)} or give a dict of switches.')
        return dict(PRESETS[performance])
    if isinstance(performance, dict):
        known = [n for n in inspect.signature(configure_performance).parameters if n != 'model']
        unknown = sorted(set(performance) - set(known))
        if unknown:
            raise ValueError(f'unknown performance switch(es) {unknown}; known switches: {known}.')
        return dict(performance)
    raise TypeError(f'performance must be None, a preset name or a dict, got {type(performance)}')


class ADDP(BaseSelfSupervisor):
    """ADDP pretraining algorithm (see the module docstring).

    Args:
        backbone (dict): :class:`ADDPViT` config.
        neck (dict): :class:`ADDPDecoder` config (``num_tokens``/``num_codes``
            are filled in from the encoder grid / tokenizer when absent).
        head (dict): :class:`ADDPLossHead` config.
        tokenizer (dict): Frozen ``VQGANTokenizer`` config with ``checkpoint``.
        token_predictor (dict): Frozen ``MAGETokenPredictor`` config with
            ``checkpoint``. Its ``train_dropout=True`` reproduces the release
            (predictor dropout active while making ``x_t`` and the target,
            spec §1.9.3); False keeps it deterministic.
        mask_sampler (dict): :class:`ADDPMaskSampler` config. Defaults to the
            official schedule.
        sampler (dict, optional): Generation sampler used by :meth:`predict`.
            Defaults to None.
        pixel_mean (Sequence[float]): Encoder input mean (after clamping x_t
            to [0,1]). Defaults to ImageNet's.
        pixel_std (Sequence[float]): Encoder input std. Defaults to ImageNet's.
        require_frozen_checkpoints (bool): Raise at build time when the
            tokenizer or predictor has no checkpoint. Set False only for tests
            that load full weights afterwards. Defaults to True.
        batch_predictor_passes (bool): Performance switch: run the two token
            predictor passes (``m_{t+1}`` and ``m_t``) as one batched call
            (:meth:`MAGETokenPredictor.predict_probs_multi`). Bitwise equal to
            two calls with a deterministic predictor (tested); with the
            release's active predictor dropout the dropout draws differ (same
            distribution). Defaults to False.
        performance (str | dict, optional): Run-time performance switches
            applied after the build: a preset name of
            :data:`addp_mm.models.utils.performance.PRESETS` (``'plain'`` or
            ``'fast'``) or a dict of switches for
            :func:`~addp_mm.models.utils.performance.configure_performance`
            (e.g. ``dict(sdpa=True, frozen_dtype='bf16')``). They change speed,
            not the state dict. None leaves every module's own setting.
            Defaults to None.
        data_preprocessor (dict, optional): Defaults to a
            ``SelfSupDataPreprocessor`` with mean 0, std 255 and BGR->RGB, i.e.
            RGB in [0, 1] (no ImageNet normalisation before the tokenizer).
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 tokenizer: dict,
                 token_predictor: dict,
                 mask_sampler: Optional[dict] = None,
                 sampler: Optional[dict] = None,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_STD,
                 require_frozen_checkpoints: bool = True,
                 batch_predictor_passes: bool = False,
                 performance: Optional[Union[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        switches = _performance_switches(performance)  # validate before the heavy build
        # ---- build-time checks of the external checkpoints (before any heavy build)
        for name, cfg in (('tokenizer', tokenizer), ('token_predictor', token_predictor)):
            path = _ckpt_path(cfg)
            if path is None:
                if require_frozen_checkpoints:
                    raise ValueError(
                        f'ADDP needs a pretrained frozen {name}: set `model.{name}.checkpoint` '
                        '(see the config variables at the top of the config for where to get it).')
            elif not osp.isfile(path):
                raise FileNotFoundError(
                    f'{name} checkpoint not found: {path!r}. Download it (see the config header) '
                    f'and set its path, e.g. --cfg-options model.{name}.checkpoint=/path/to/file.')

        if isinstance(backbone, dict):
            backbone = MODELS.build(backbone)
        if isinstance(tokenizer, dict):
            tokenizer = MODELS.build(tokenizer)
        if isinstance(token_predictor, dict):
            token_predictor = MODELS.build(token_predictor)
        if isinstance(neck, dict):
            neck = dict(neck)
            neck.setdefault('num_tokens', backbone.num_patches)
            neck.setdefault('num_codes', tokenizer.num_embeddings)
        if data_preprocessor is None:
            data_preprocessor = unit_rgb_preprocessor()
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tokenizer = tokenizer
        self.token_predictor = token_predictor
        if mask_sampler is None or isinstance(mask_sampler, dict):
            ms_cfg = dict(mask_sampler or {})
            ms_cfg.setdefault('type', 'ADDPMaskSampler')
            mask_sampler = MODELS.build(ms_cfg)
        self.mask_sampler = mask_sampler
        self.batch_predictor_passes = batch_predictor_passes
        self.sampler = MODELS.build(sampler) if isinstance(sampler, dict) else sampler
        self.register_buffer('pixel_mean', torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer('pixel_std', torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

        # ---- geometry / vocabulary consistency (clear errors at build time)
        img_size = self.backbone.img_size
        f = int(self.tokenizer.downsample_factor)
        if img_size[0] % f or img_size[1] % f:
            raise ValueError(f'image size {img_size} is not divisible by the tokenizer down-sampling '
                             f'factor {f}; choose an img_size that is a multiple of {f}.')
        self.token_grid = (img_size[0] // f, img_size[1] // f)
        if self.token_grid != self.backbone.grid_size:
            raise ValueError(
                f'image size {img_size} gives a {self.token_grid} VQ token grid (tokenizer /{f}) but a '
                f'{self.backbone.grid_size} patch grid (patch size {self.backbone.patch_size}); '
                'ADDP needs one patch per token: set backbone.patch_size to the tokenizer '
                'down-sampling factor or change img_size.')
        num_tokens = self.token_grid[0] * self.token_grid[1]
        tp_tokens = getattr(self.token_predictor, 'num_tokens', num_tokens)
        if tp_tokens != num_tokens:
            raise ValueError(f'token_predictor.num_tokens={tp_tokens} but image size {img_size} gives '
                             f'{num_tokens} tokens ({self.token_grid}); set token_predictor.num_tokens='
                             f'{num_tokens} or change img_size.')
        K = int(self.tokenizer.num_embeddings)
        tp_codes = getattr(self.token_predictor, 'num_codes', None)
        if tp_codes is not None and int(tp_codes) != K:
            raise ValueError(
                f'token predictor vocabulary ({tp_codes} codes) does not match the tokenizer codebook '
                f'({K} entries); use the predictor trained with this tokenizer and set '
                f'token_predictor.num_codes={K}.')
        if self.neck.num_codes != K or self.neck.num_tokens != num_tokens:
            raise ValueError(
                f'neck built for {self.neck.num_codes} codes / {self.neck.num_tokens} tokens but the '
                f'tokenizer has {K} codes and the image gives {num_tokens} tokens; drop num_codes/'
                'num_tokens from the neck config (ADDP fills them in).')
        self.num_tokens = num_tokens
        self.num_codes = K
        self._freeze(self.tokenizer)
        self._freeze(self.token_predictor)
        #: performance: pad the decoder to :attr:`max_visible` appended slots
        #: (fixed shapes every training step; see ``ADDPDecoder.forward(pad_to)``)
        self.static_decoder_length = False
        self.compile_trainable: Union[bool, dict] = False
        self._images_checked = False
        if switches:
            configure_performance(self, **switches)

    # ------------------------------------------------------- performance
    @property
    def max_visible(self) -> int:
        """The most visible tokens a drawn ``m_t`` leaves (lowest schedule ratio)."""
        ms = self.mask_sampler
        cached = self.__dict__.get('_max_visible')
        if cached is not None and cached[0] is ms:
            return cached[1]
        ratios = getattr(ms, 'ratios', None)
        value = self.num_tokens if ratios is None else \
            self.num_tokens - ms.num_masked(ratios[0], self.num_tokens)
        self.__dict__['_max_visible'] = (ms, value)
        return value

    def set_compile_trainable(self, compile_cfg: Union[bool, dict]) -> None:
        """``torch.compile`` the encoder and the decoder's block stack (or undo
        it with False). Compiled lazily (eager if compiling fails); with
        ``static_decoder_length`` every step has the same shapes, otherwise
        torch recompiles once with dynamic shapes. No state-dict change."""
        from addp_mm.models.utils.performance import LazyCompiled
        self.compile_trainable = compile_cfg
        self.__dict__.pop('_compiled_backbone', None)
        self.neck.__dict__.pop('_compiled_blocks', None)
        if compile_cfg:
            self.__dict__['_compiled_backbone'] = LazyCompiled(self.backbone, compile_cfg,
                                                               'ADDP encoder')
            self.neck.__dict__['_compiled_blocks'] = LazyCompiled(self.neck._blocks, compile_cfg,
                                                                  'ADDP decoder blocks')

    # ------------------------------------------------------------------ utils
    @staticmethod
    def _freeze(module: nn.Module) -> None:
        for p in module.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> 'ADDP':
        """Keep the frozen tokenizer in eval mode; the predictor decides its
        own dropout (``train_dropout``) through its ``train`` override."""
        super().train(mode)
        self.tokenizer.train(False)
        return self

    @staticmethod
    def _as_batch(inputs: Union[Tensor, List[Tensor]]) -> Tensor:
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0] if isinstance(inputs[0], Tensor) and inputs[0].dim() == 4 \
                else torch.stack(list(inputs))
        return inputs

    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or tuple(images.shape[-2:]) != self.backbone.img_size:
            raise ValueError(
                f'images of shape {tuple(images.shape)} do not give the configured '
                f'{self.token_grid} token grid: ADDP was built for {self.backbone.img_size} inputs '
                '(set the crop size in the data pipeline to match backbone.img_size).')
        if self._images_checked:
            return  # a wrong pre-processor shows in the first batch; reading values waits for the device
        lo, hi = float(images.min()), float(images.max())
        if lo < -0.5 or hi > 1.5:
            raise ValueError(
                f'images range over [{lo:.2f}, {hi:.2f}] but ADDP expects RGB in [0, 1] (the VQGAN '
                'sees raw pixels): use data_preprocessor=dict(type=\'SelfSupDataPreprocessor\', '
                'mean=[0, 0, 0], std=[255, 255, 255], to_rgb=True) and no Normalize transform.')
        self._images_checked = True

    def normalize_pixels(self, x: Tensor) -> Tensor:
        """Clamp to [0,1], then normalise with ``pixel_mean``/``pixel_std``."""
        x = x.clamp(0., 1.)
        return (x - self.pixel_mean.to(x)) / self.pixel_std.to(x)

    def encode_pixels(self, x: Tensor) -> Tensor:
        """``x`` in nominal [0,1] ``[B,3,H,W]`` → encoder output ``[B,1+N,D]``."""
        backbone = self.__dict__.get('_compiled_backbone') or self.backbone
        return backbone(self.normalize_pixels(x))

    def extract_feat(self, inputs: Union[Tensor, List[Tensor]]) -> Tensor:
        """Encoder features of clean images in [0,1] (``mode='tensor'``)."""
        return self.encode_pixels(self._as_batch(inputs))

    def predict_logits(self, x: Optional[Tensor], tokens: Tensor, mask: Tensor) -> Tensor:
        """Decoder logits at the grid slots.

        Args:
            x (Tensor, optional): Images ``[B,3,H,W]`` in nominal [0,1]. Not
                read (and may be None) when ``mask`` is all ones.
            tokens (Tensor): ``[B, N]`` ids (only visible ones are read).
            mask (Tensor): ``[B, N]`` 1 = masked.

        Returns:
            Tensor: ``[B, N, vocab_size]``.
        """
        latent = None if bool(mask.bool().all()) else self.encode_pixels(x)
        return self.neck(latent, tokens, mask)[:, 1:1 + self.num_tokens]

    def tokens_to_pixels(self, tokens: Tensor, probs: Optional[Tensor], mask: Tensor) -> Tensor:
        """Token-to-pixel decoding (soft embeddings at masked positions).

        Args:
            tokens (Tensor): ``[B, N]`` ids, used where ``mask`` is 0 (and
                everywhere when ``probs`` is None).
            probs (Tensor, optional): ``[B, N, K]`` distributions over the
                codebook, used where ``mask`` is 1.
            mask (Tensor): ``[B, N]`` 1 = take the soft embedding.

        Returns:
            Tensor: Decoded images ``[B, 3, H, W]`` (not clamped).
        """
        codebook = self.tokenizer.codebook.float()  # [K, C]
        B, N = tokens.shape
        z = F.embedding(tokens, codebook)  # [B, N, C] hard
        if probs is not None:
            soft = torch.einsum('bnk,kc->bnc', probs.float(), codebook)
            z = torch.where(mask.bool().unsqueeze(-1), soft, z)
        h, w = self.token_grid
        z = z.transpose(1, 2).reshape(B, -1, h, w)
        return self.tokenizer.decode(z)

    # --------------------------------------------------------------- training
    def forward_train_step(self,
                           images: Tensor,
                           mask_t: Optional[Tensor] = None,
                           mask_t_next: Optional[Tensor] = None,
                           return_intermediates: bool = False,
                           generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """One ADDP training step with optional explicit masks.

        Args:
            images (Tensor): Clean images ``[B, 3, H, W]`` in [0, 1].
            mask_t (Tensor, optional): ``[B, N]`` step-t mask (1 = masked).
                Drawn with the mask sampler when None (then ``mask_t_next``
                must be None too). Defaults to None.
            mask_t_next (Tensor, optional): ``[B, N]`` step-(t+1) mask,
                ``⊇ mask_t``. Defaults to None.
            return_intermediates (bool): Also return ``z0``, the masks,
                ``probs_next``, ``target``, ``x_t``, ``latent`` and ``logits``.
                Defaults to False.
            generator (torch.Generator, optional): For the mask draw.
                Defaults to None.

        Returns:
            dict[str, Tensor]: ``loss`` plus the intermediates on request.
        """
        self._check_images(images)
        B, N = images.shape[0], self.num_tokens
        num_visible = pad_to = None
        if mask_t is None:
            if mask_t_next is not None:
                raise ValueError('give both masks or neither')
            # nested by construction; the counts are known on the host (no device reads)
            mask_t, mask_t_next, n_t, _ = self.mask_sampler(B, N, images.device, generator,
                                                            return_counts=True)
            num_visible = N - n_t
            if self.static_decoder_length:
                pad_to = max(self.max_visible, num_visible)
        elif mask_t_next is None:
            raise ValueError('give both masks or neither')
        else:
            mask_t = mask_t.to(images.device, torch.float32)
            mask_t_next = mask_t_next.to(images.device, torch.float32)
            if bool((mask_t > mask_t_next).any()):
                raise ValueError('mask_t_next must contain every position masked by mask_t')
            if self.static_decoder_length:
                pad_to = max(self.max_visible, int((mask_t < 0.5).sum(dim=1).max()) if B else 0)

        with torch.no_grad():
            z0, _ = self.tokenizer.encode(images)  # [B, N]
            # z0 comes from the tokenizer: no id range check (it would wait for the device)
            if self.batch_predictor_passes and hasattr(self.token_predictor, 'predict_probs_multi'):
                # one batched pass over [m_{t+1}; m_t]  ([2B, N] -> 2 x [B, N, K])
                probs_next, target = self.token_predictor.predict_probs_multi(
                    z0, [mask_t_next, mask_t], check_values=False)
            else:
                probs_next = self.token_predictor.predict_probs(z0, mask_t_next,
                                                                check_values=False)  # [B, N, K]
                target = self.token_predictor.predict_probs(z0, mask_t,
                                                            check_values=False)  # [B, N, K]
            x_t = self.tokens_to_pixels(z0, probs_next, mask_t)  # [B, 3, H, W]
        latent = self.encode_pixels(x_t)  # [B, 1+N, D]
        logits = self.neck(latent, z0, mask_t, num_visible=num_visible,
                           pad_to=pad_to)  # [B, 1+N+n_vis (or pad_to), V]
        loss = self.head.loss(logits[:, 1:1 + self.num_tokens], target, mask_t)
        out = dict(loss=loss)
        if return_intermediates:
            out.update(z0=z0, mask_t=mask_t, mask_t_next=mask_t_next, probs_next=probs_next,
                       target=target, x_t=x_t, latent=latent, logits=logits)
        return out

    def loss(self, inputs: Union[Tensor, List[Tensor]], data_samples: Optional[list] = None,
             **kwargs) -> Dict[str, Tensor]:
        """Draw masks and compute the ADDP loss for a batch in [0, 1]."""
        return dict(loss=self.forward_train_step(self._as_batch(inputs))['loss'])

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)

    def predict(self, inputs, data_samples=None, **kwargs):
        """Generation through ``self.sampler`` (configure ``model.sampler``)."""
        if self.sampler is None:
            raise ValueError('ADDP.predict needs a generation sampler: set model.sampler='
                             "dict(type='AlternatingDenoisingSampler', ...) in the config.")
        return self.sampler.predict(self, inputs, data_samples, **kwargs)


for _cls in (ADDPViT, ADDPDecoder, ADDPLossHead, ADDP):
    register_model(_cls)

__all__ = ['ADDPViT', 'ADDPDecoder', 'ADDPLossHead', 'ADDP', 'ADDPMaskSampler', 'IMAGENET_MEAN',
           'IMAGENET_STD']
