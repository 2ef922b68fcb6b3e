"""Frozen MAGE token predictor (the "teacher" of ADDP pretraining).

References:
    - MAGE: Li et al., "MAGE: MAsked Generative Encoder to Unify
      Representation Learning and Image Synthesis", CVPR 2023.
    - ADDP: Tian et al., ICLR 2024 (``modeling/encoders/token_predictor.py``:
      MAGE's model plus a token-sampling path, which is what is ported here).
    - BERT (token embedding and MLM head), timm (transformer block names).

Only the path ADDP uses is implemented: token ids in, per-position
probabilities over the codebook out.

1. ids = ``[fake_class_id] + tokens`` with ``mask_id`` at masked positions
   (``num_tokens + 1`` slots);
2. ``token_emb``: word + learned position embeddings, LayerNorm (eps 1e-6),
   dropout;
3. encoder ``blocks`` over all slots (no token dropping), ``norm``;
4. ``decoder_embed``; every masked slot is replaced by the (embedded) encoder
   output of slot 0 ("pad with cls"); ``+ decoder_pos_embed_learned``;
   ``decoder_blocks``, ``decoder_norm``;
5. ``mlm_layer``: ``LN(GELU(fc(x))) @ word_embeddings.T + bias`` over the whole
   vocabulary (``num_codes + num_classes + 1`` ids);
6. slots ``1..num_tokens`` and ids ``0..num_codes-1``, softmax.

Checkpoints (read with ``weights_only=True``): the official MAGE releases
``mage-vitb-1600.pth`` / ``mage-vitl-1600.pth`` (``{'model': ...}``, keys
without prefix), the ``token_predictor.*`` part of an official ADDP release or
of a converted ADDP checkpoint, or an mmengine checkpoint written by
``tools/model_converters/mage_to_mm.py``. Keys are the official names.

Documented-unused official keys, dropped on load (no computation of the
token path reads them): ``cls_token``, ``pos_embed``, ``mask_token``,
``decoder_pos_embed`` (fixed sin-cos tables / the pixel path),
``patch_embed.proj.*``, ``decoder_pred.*`` and the whole embedded ``vqgan.*``
copy of the tokenizer.

**The embedded ``vqgan.*`` copy.** MAGE (and ADDP) files carry a copy of the
VQGAN under ``vqgan.*``; in the reference code loading the MAGE file
non-strictly writes it into the VQGAN that ADDP shares with the predictor.
Here the predictor never loads it: the tokenizer's weights come only from the
tokenizer's own ``checkpoint`` (:class:`~addp_mm.models.tokenizers.vqgan.VQGANTokenizer`),
so a predictor checkpoint can never silently overwrite them. The dropped
``vqgan.*`` keys are counted in the load log. ``tools/model_converters/mage_to_mm.py
--compare-vqgan FILE`` checks that the copy equals a given tokenizer file, and
a user who only has the MAGE file can point the tokenizer's ``checkpoint`` at it
explicitly (its ``vqgan.*`` keys are then read, and the log says so).

**Dropout.** MAGE uses dropout 0.1 (embeddings, attention, projections, MLP).
The reference ADDP release calls ``model.train()`` every epoch, so its frozen
predictor ran *with dropout active* during pretraining (a stochastic teacher).
``train_dropout=True`` reproduces that: the module then follows its parent's
``train()``/``eval()``. The default ``False`` keeps it in eval mode always
(deterministic targets).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.models.layers import Block, MlmLayer, init_linear_layernorm, set_sdpa
from addp_mm.registry import register_model
from addp_mm.utils.checkpoint import (CheckpointError, check_state_dict,
                                      load_external_state_dict)
from addp_mm.utils.precision import (UNSET, LazyCompiled, compile_enabled, frozen_precision,
                                     parse_frozen_dtype, resolve_frozen_dtype)

__all__ = ['MAGETokenPredictor', 'convert_mage_state_dict', 'MAGE_UNUSED_KEYS',
           'MAGE_UNUSED_PREFIXES']

#: Official MAGE keys that the token path never reads (dropped on load).
MAGE_UNUSED_KEYS: Tuple[str, ...] = ('cls_token', 'pos_embed', 'mask_token', 'decoder_pos_embed')
#: Official MAGE key prefixes that the token path never reads (dropped on load).
MAGE_UNUSED_PREFIXES: Tuple[str, ...] = ('vqgan.', 'patch_embed.', 'decoder_pred.')

#: Prefixes under which a predictor may be stored inside a larger checkpoint.
_MAGE_CONTAINER_PREFIXES: Tuple[str, ...] = ('token_predictor.', )


def convert_mage_state_dict(
        state_dict: Dict[str, Tensor],
        prefix: Optional[str] = None) -> Tuple[Dict[str, Tensor], List[str], str]:
    """Map an official MAGE (or ADDP ``token_predictor.*``) state dict onto
    :class:`MAGETokenPredictor` keys.

    Args:
        state_dict (dict[str, Tensor]): Flat state dict (after unwrapping
            ``'model'``/``'state_dict'``).
        prefix (str, optional): Prefix of the predictor's keys, e.g.
            ``'token_predictor.'`` for ADDP files. ``None`` detects it (no prefix
            when ``token_emb.word_embeddings.weight`` is top level, else
            ``'token_predictor.'``). Defaults to None.

    Returns:
        tuple: ``(converted, dropped, prefix)``: predictor state dict, the
        (prefixed) documented-unused keys that were dropped, and the prefix used.

    Raises:
        CheckpointError: If no MAGE keys are found or ``token_emb.position_ids``
            is not ``0..L-1``.
    """
    marker = 'token_emb.word_embeddings.weight'
    if prefix is None:
        if marker in state_dict:
            prefix = ''
        else:
            prefix = next((p for p in _MAGE_CONTAINER_PREFIXES if p + marker in state_dict), None)
            if prefix is None:
                raise CheckpointError(
                    f'no MAGE token-predictor weights found: expected "{marker}" at the top level '
                    f'(or under "model"/"state_dict", or with prefix {_MAGE_CONTAINER_PREFIXES}); '
                    f'the first keys are {list(state_dict)[:5]}. Pass mage-vitb-1600.pth / '
                    'mage-vitl-1600.pth (or a converted file).')
    converted, dropped = {}, []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in MAGE_UNUSED_KEYS or name.startswith(MAGE_UNUSED_PREFIXES):
            dropped.append(key)
            continue
        converted[name] = value
    pos_ids = converted.get('token_emb.position_ids')
    if pos_ids is not None and pos_ids.device.type != 'meta' and not torch.equal(
            pos_ids.reshape(-1).long(), torch.arange(pos_ids.numel())):
        raise CheckpointError('token_emb.position_ids in the checkpoint is not 0..L-1; '
                              'the file is corrupt or not a MAGE checkpoint.')
    return converted, dropped, prefix


class _TokenEmbedding(nn.Module):
    """BERT-style embeddings (keys ``word_embeddings``, ``position_embeddings``,
    ``LayerNorm``, buffer ``position_ids``)."""

    def __init__(self, vocab_size: int, max_positions: int, dim: int, drop: float,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(drop)
        self.register_buffer('position_ids', torch.arange(max_positions).unsqueeze(0))

    def forward(self, ids: Tensor) -> Tensor:
        pos = self.position_ids[:, :ids.shape[1]]  # [1, L]
        x = self.word_embeddings(ids) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))


@register_model
class MAGETokenPredictor(BaseModule):
    """Frozen MAGE encoder/decoder used as ADDP's token predictor.

    Args:
        num_codes (int): VQ codebook size. Defaults to 1024.
        num_classes (int): Class ids in the vocabulary. Defaults to 1000.
        num_tokens (int): Token-grid positions (``h*w``). Defaults to 256.
        embed_dims (int): Encoder width. Defaults to 768.
        depth (int): Encoder blocks. Defaults to 12.
        num_heads (int): Encoder heads. Defaults to 12.
        decoder_embed_dims (int): Decoder width. Defaults to 768.
        decoder_depth (int): Decoder blocks. Defaults to 8.
        decoder_num_heads (int): Decoder heads. Defaults to 16.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.
        drop_rate (float): Dropout in embeddings, attention, projections and
            MLPs (only active with ``train_dropout=True`` in train mode).
            Defaults to 0.1.
        fake_class_id (int): Absolute vocabulary id put in slot 0 (MAGE's
            "fake class", ``num_codes + 76`` in the release). Defaults to 1100.
        train_dropout (bool): Follow the parent's train mode, so dropout is
            active during pretraining as in the reference release. When False
            the predictor always stays in eval mode. Defaults to False.
        checkpoint (str, optional): MAGE file loaded strictly in
            :meth:`init_weights` (see the module docstring). Defaults to None.
        use_sdpa (bool): Performance switch: ``F.scaled_dot_product_attention``
            in every block (see :class:`~addp_mm.models.layers.Attention`;
            fp32 results within ~1e-5 of the explicit path). Defaults to False.
        frozen_dtype (str, optional): Performance switch: precision of the
            forward pass. None follows the caller's autocast state; ``'fp32'``
            forces float32; ``'bf16'``/``'fp16'`` runs it under
            ``torch.autocast``; ``'auto'`` is bf16 while the caller runs under
            autocast on hardware with native bf16, else None. The softmax of
            :meth:`predict_probs` is always float32. Defaults to None.
        compile (bool | str | dict): Performance switch: ``torch.compile`` the
            embedding → blocks → MLM computation (dict = its keyword
            arguments; ``'auto'`` = on CUDA only), lazily on the first call
            with static shapes; eager if compiling fails. Defaults to False.
        init_cfg (dict | list[dict], optional): mmengine init config. Defaults
            to None.
    """

    def __init__(self,
                 num_codes: int = 1024,
                 num_classes: int = 1000,
                 num_tokens: int = 256,
                 embed_dims: int = 768,
                 depth: int = 12,
                 num_heads: int = 12,
                 decoder_embed_dims: int = 768,
                 decoder_depth: int = 8,
                 decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.1,
                 fake_class_id: int = 1100,
                 train_dropout: bool = False,
                 checkpoint: Optional[str] = None,
                 use_sdpa: bool = False,
                 frozen_dtype: Optional[str] = None,
                 compile: Union[bool, str, dict] = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_codes = num_codes
        self.num_classes = num_classes
        self.num_tokens = num_tokens
        self.vocab_size = num_codes + num_classes + 1
        self.mask_id = self.vocab_size - 1
        if not 0 <= fake_class_id < self.mask_id:
            raise ValueError(f'fake_class_id={fake_class_id} must be a vocabulary id below the '
                             f'mask id {self.mask_id}')
        self.fake_class_id = fake_class_id
        self.train_dropout = train_dropout
        self.checkpoint = checkpoint
        seq_len = num_tokens + 1

        self.token_emb = _TokenEmbedding(self.vocab_size, seq_len, embed_dims, drop_rate)
        self.blocks = nn.ModuleList([
            Block(embed_dims, num_heads, mlp_ratio, qkv_bias=True, drop=drop_rate,
                  attn_drop=drop_rate, norm_eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dims, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dims, decoder_embed_dims)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len, decoder_embed_dims))
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dims, decoder_num_heads, mlp_ratio, qkv_bias=True, drop=drop_rate,
                  attn_drop=drop_rate, norm_eps=1e-6) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dims, eps=1e-6)
        self.mlm_layer = MlmLayer(decoder_embed_dims, embed_dims, self.vocab_size, ln_eps=1e-5)
        self._random_init()
        self._freeze()
        # performance switches (none changes the state dict)
        set_sdpa(self, use_sdpa)
        self.frozen_dtype = parse_frozen_dtype(frozen_dtype)
        self.compile = compile
        self._compiled: Dict[str, Callable] = {}

    def set_frozen_dtype(self, frozen_dtype: Optional[str]) -> None:
        """Change ``frozen_dtype`` at run time (see the class docstring)."""
        self.frozen_dtype = parse_frozen_dtype(frozen_dtype)

    def set_performance(self, frozen_dtype=UNSET, compile=UNSET, **others) -> None:
        """Apply the switches of
        :func:`~addp_mm.models.utils.performance.configure_performance` that
        concern the predictor (``frozen_dtype``, ``compile``); ``UNSET`` ones
        stay as they are, ``others`` are ignored."""
        if frozen_dtype is not UNSET:
            self.set_frozen_dtype(frozen_dtype)
        if compile is not UNSET:
            self.compile, self._compiled = compile, {}

    # ------------------------------------------------------------------ init
    def _random_init(self) -> None:
        """MAGE-like random init (used only without a checkpoint)."""
        nn.init.trunc_normal_(self.decoder_pos_embed_learned, std=.02)
        nn.init.trunc_normal_(self.token_emb.word_embeddings.weight, std=.02)
        nn.init.trunc_normal_(self.token_emb.position_embeddings.weight, std=.02)
        self.apply(init_linear_layernorm)

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> 'MAGETokenPredictor':
        """Eval mode always, unless ``train_dropout`` (then follow ``mode``)."""
        return super().train(mode and self.train_dropout)

    def init_weights(self) -> None:
        """Apply ``init_cfg`` then, if ``checkpoint`` is set, load it strictly."""
        super().init_weights()
        if self.checkpoint is not None:
            self.load_checkpoint(self.checkpoint)

    def load_checkpoint(self, path: str, prefix: Optional[str] = None) -> None:
        """Load predictor weights from ``path`` with strict key/shape checks.

        The embedded ``vqgan.*`` copy and the other documented-unused keys
        are dropped (and counted in the log); everything else must match.

        Args:
            path (str): MAGE / ADDP / converted file.
            prefix (str, optional): Key prefix of the predictor in the file;
                detected when None. Defaults to None.

        Raises:
            CheckpointError: Missing/unreadable file, or keys/shapes that do not
                match the configured sizes (the first offenders are named).
        """
        state_dict = load_external_state_dict(path, keys=('model', 'state_dict'))
        self.load_official_state_dict(state_dict, source=path, prefix=prefix)

    def load_official_state_dict(self, state_dict: Dict[str, Tensor], source: str = 'state dict',
                                 prefix: Optional[str] = None) -> None:
        """Convert (:func:`convert_mage_state_dict`), check strictly and load
        an already-read MAGE/ADDP/converted state dict.

        Args:
            state_dict (dict[str, Tensor]): Flat state dict of the file.
            source (str): Name used in messages. Defaults to ``'state dict'``.
            prefix (str, optional): See :meth:`load_checkpoint`. Defaults to None.
        """
        converted, dropped, used_prefix = convert_mage_state_dict(state_dict, prefix)
        check_state_dict(self, converted, source=repr(source))
        self.load_state_dict(converted, strict=True)
        self._freeze()
        n_vq = sum(k[len(used_prefix):].startswith('vqgan.') for k in dropped)
        print_log(
            f'MAGETokenPredictor: loaded {len(converted)} tensors from {source}'
            + (f' (keys under "{used_prefix}")' if used_prefix else '')
            + f'; dropped {len(dropped)} documented-unused keys, {n_vq} of them the embedded '
            'vqgan.* copy (the tokenizer loads its own checkpoint).', logger='current')

    # --------------------------------------------------------------- forward
    def _check_inputs(self, tokens: Tensor, mask: Tensor, check_values: bool = True) -> Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f'tokens must be [B, {self.num_tokens}] (raster-order grid), '
                             f'got shape {tuple(tokens.shape)}')
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f'tokens must be an integer tensor, got {tokens.dtype}')
        if tuple(mask.shape) != tuple(tokens.shape):
            raise ValueError(f'mask shape {tuple(mask.shape)} must equal tokens shape '
                             f'{tuple(tokens.shape)}')
        mask = mask.bool() if mask.dtype == torch.bool else mask > 0.5
        if not check_values:  # reading the values would wait for the device
            return mask
        visible = tokens[~mask]
        if visible.numel() and (int(visible.min()) < 0 or int(visible.max()) >= self.num_codes):
            raise ValueError(
                f'visible tokens must be codebook ids in [0, {self.num_codes - 1}]; got min '
                f'{int(visible.min())}, max {int(visible.max())}')
        return mask

    def forward_logits(self, tokens: Tensor, mask: Tensor, check_values: bool = True) -> Tensor:
        """Full-vocabulary logits.

        Args:
            tokens (Tensor): LongTensor ``[B, N]`` codebook ids (values at masked
                positions are ignored).
            mask (Tensor): ``[B, N]`` bool or float, 1/True = masked.
            check_values (bool): Check that the visible ids are codebook
                entries (reads them, i.e. waits for the device; callers that
                pass the tokenizer's own ids skip it). Defaults to True.

        Returns:
            Tensor: ``[B, 1 + N, vocab_size]`` (slot 0 is the class slot).
        """
        mask = self._check_inputs(tokens, mask, check_values)
        B = tokens.shape[0]
        ids = torch.where(mask, torch.full_like(tokens, self.mask_id), tokens)
        ids = torch.cat([ids.new_full((B, 1), self.fake_class_id), ids], dim=1)  # [B, 1+N]
        slot_mask = torch.cat([mask.new_zeros(B, 1), mask], dim=1)  # [B, 1+N]
        fn = self._forward_ids
        device_type = tokens.device.type
        if compile_enabled(self.compile, device_type):
            if 'forward' not in self._compiled:
                self._compiled['forward'] = LazyCompiled(self._forward_ids, self.compile,
                                                         'MAGE token predictor',
                                                         defaults=dict(dynamic=False))
            fn = self._compiled['forward']
        dtype = resolve_frozen_dtype(self.frozen_dtype, device_type)
        if dtype is None:
            return fn(ids, slot_mask)
        with frozen_precision(dtype, device_type):
            return fn(ids, slot_mask).float()

    def _forward_ids(self, ids: Tensor, slot_mask: Tensor) -> Tensor:
        """Embeddings → encoder → decoder → MLM head for prepared ids.

        Args:
            ids (Tensor): ``[B, 1+N]`` vocabulary ids (slot 0 = class id).
            slot_mask (Tensor): ``[B, 1+N]`` bool, True = masked slot.

        Returns:
            Tensor: ``[B, 1+N, vocab_size]`` logits.
        """
        # encoder: all 1+N slots, nothing dropped
        x = self.token_emb(ids)  # [B, 1+N, D]
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)

        # decoder: masked slots padded with the class-slot output
        x = self.decoder_embed(x)  # [B, 1+N, Dd]
        x = torch.where(slot_mask.unsqueeze(-1), x[:, :1].expand_as(x), x)
        x = x + self.decoder_pos_embed_learned
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.mlm_layer(x, self.token_emb.word_embeddings.weight.detach())  # [B, 1+N, V]

    def predict_probs(self, tokens: Tensor, mask: Tensor, check_values: bool = True) -> Tensor:
        """Per-position distribution over the codebook.

        Args:
            tokens (Tensor): LongTensor ``[B, N]`` codebook ids.
            mask (Tensor): ``[B, N]`` bool or float, 1/True = masked.
            check_values (bool): See :meth:`forward_logits`. Defaults to True.

        Returns:
            Tensor: ``[B, N, num_codes]`` float32 probabilities (softmax over
            the codebook ids only, defined at every position).
        """
        logits = self.forward_logits(tokens, mask, check_values)[:, 1:, :self.num_codes]  # [B, N, K]
        return logits.float().softmax(dim=-1)

    def predict_probs_multi(self, tokens: Tensor, masks: Sequence[Tensor],
                            check_values: bool = True) -> List[Tensor]:
        """:meth:`predict_probs` for several masks of the same tokens in one
        batched forward pass (performance: one pass over ``len(masks) * B``
        samples instead of ``len(masks)`` passes).

        Every sample is computed independently, so in eval mode each result
        equals the separate :meth:`predict_probs` call up to the rounding of
        the batch-size-dependent matmul blocking (bitwise equal with the
        default CPU BLAS in the tests). With dropout active
        (``train_dropout=True`` in train mode) the dropout draws differ from
        separate calls (same distribution).

        Args:
            tokens (Tensor): LongTensor ``[B, N]``.
            masks (Sequence[Tensor]): Masks ``[B, N]`` (1/True = masked).
            check_values (bool): See :meth:`forward_logits`. Defaults to True.

        Returns:
            list[Tensor]: One ``[B, N, num_codes]`` tensor per mask, in order.
        """
        if len(masks) == 0:
            raise ValueError('predict_probs_multi needs at least one mask')
        B = tokens.shape[0]
        stacked = torch.cat([m.bool() if m.dtype == torch.bool else m > 0.5 for m in masks],
                            dim=0).to(tokens.device)  # [M*B, N]
        probs = self.predict_probs(tokens.repeat(len(masks), 1), stacked,
                                   check_values)  # [M*B, N, K]
        return list(probs.split(B, dim=0))

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Alias of :meth:`predict_probs`."""
        return self.predict_probs(tokens, mask)
