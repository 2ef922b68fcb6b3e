"""``ADDPDecoder``: ADDP's pixel-to-token decoder (the neck), reference
``models_addp.py``, ``forward_decoder``."""
from typing import Optional

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from addp_mm.models.layers import Block, MlmLayer, init_linear_layernorm
from addp_mm.registry import register_model


@register_model
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


__all__ = ['ADDPDecoder']
