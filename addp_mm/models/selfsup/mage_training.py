"""MAGE-style masked token modelling: training ADDP's token predictor.

References:
    - MAGE: Li et al., "MAGE: MAsked Generative Encoder to Unify
      Representation Learning and Image Synthesis", CVPR 2023
      (``models_mage.py``: variable mask ratio from a truncated normal,
      token dropping, decoder padding with the class-slot feature, label-
      smoothed cross-entropy on masked positions).
    - ADDP: Tian et al., ICLR 2024 (uses the trained predictor frozen).

:class:`MAGEPredictorTrainer` holds a **frozen, trained** tokenizer
(``self.tokenizer``) and a trainable :class:`MAGETokenPredictor`
(``self.token_predictor``). Per iteration:

1. ``z = VQ-Enc(x)``: token ids of the images (no gradient);
2. one mask ratio per batch ``r ~ N(mu, std^2)`` truncated to
   ``[ratio_min, ratio_max]``; ``ceil(N * r)`` positions per sample masked
   (those with the smallest uniform noise);
3. optional MAGE token dropping (``drop_tokens=True``): the
   ``ceil(N * ratio_min)`` masked positions with the smallest noise are
   removed from the encoder sequence (the remaining masked ones enter it as
   the mask id); the decoder sees all slots, every masked slot padded with
   the class-slot output. With ``drop_tokens=False`` (default) the encoder
   sees every slot, which is exactly the path ADDP and the sampler use
   (:meth:`MAGETokenPredictor.forward_logits`);
4. loss: cross-entropy (label smoothing 0.1) of the logits restricted to the
   codebook ids against ``z``, averaged over masked positions.

**Output format.** The predictor lives under ``token_predictor.`` in the
Runner checkpoints, so ``iter_N.pth`` loads directly as
``MAGETokenPredictor(checkpoint='.../iter_N.pth')`` (prefix detected, the
``tokenizer.*`` copy ignored), which is what the ADDP config uses.
``tools/model_converters/mage_to_mm.py CKPT OUT --config CFG`` writes a
stand-alone file with the official (unprefixed) MAGE key names when one is
preferred.
"""
import math
import os.path as osp
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from addp_mm.registry import register_model
from addp_mm.utils.pixels import unit_rgb_preprocessor
from .vqgan_training import _as_batch

__all__ = ['MAGEPredictorTrainer', 'sample_truncnorm_ratio', 'masked_token_loss']


def sample_truncnorm_ratio(mu: float, std: float, low: float, high: float,
                           generator: Optional[torch.Generator] = None) -> float:
    """One draw from ``N(mu, std^2)`` truncated to ``[low, high]`` (inverse CDF).

    Args:
        mu (float): Mean. std (float): Standard deviation.
        low (float): Lower bound. high (float): Upper bound.
        generator (torch.Generator, optional): Defaults to None.

    Returns:
        float: The ratio.
    """
    a = torch.special.ndtr(torch.tensor((low - mu) / std, dtype=torch.float64))
    b = torch.special.ndtr(torch.tensor((high - mu) / std, dtype=torch.float64))
    u = torch.rand((), generator=generator, dtype=torch.float64)
    x = mu + std * torch.special.ndtri(a + (b - a) * u)
    return float(x.clamp(low, high))


def masked_token_loss(logits: Tensor, targets: Tensor, mask: Tensor,
                      label_smoothing: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy averaged over masked positions.

    Args:
        logits (Tensor): ``[B, N, K]`` logits over the codebook ids.
        targets (Tensor): ``[B, N]`` ground-truth ids.
        mask (Tensor): ``[B, N]``, 1/True = masked (enters the loss).
        label_smoothing (float): Defaults to 0.1.

    Returns:
        Tensor: Scalar loss.
    """
    B, N, K = logits.shape
    loss = F.cross_entropy(logits.float().reshape(B * N, K), targets.reshape(B * N),
                           reduction='none', label_smoothing=label_smoothing)
    m = mask.float().reshape(B * N)
    return (loss * m).sum() / m.sum().clamp_min(1.)


@register_model
class MAGEPredictorTrainer(BaseModel):
    """Train a :class:`MAGETokenPredictor` on tokens of a frozen tokenizer.

    Args:
        tokenizer (dict): ``VQGANTokenizer`` config whose ``checkpoint`` holds
            the trained tokenizer (e.g. a ``VQGANTrainer`` ``iter_N.pth``).
        token_predictor (dict): ``MAGETokenPredictor`` config (its
            ``num_codes`` must equal the tokenizer's codebook size and
            ``num_tokens`` the token-grid size). Made trainable here.
        mask_ratio_min (float): Lower bound of the mask ratio (and the token
            dropping ratio). Defaults to 0.5.
        mask_ratio_max (float): Upper bound. Defaults to 1.0.
        mask_ratio_mu (float): Mean of the truncated normal. Defaults to 0.55.
        mask_ratio_std (float): Its std. Defaults to 0.25.
        drop_tokens (bool): MAGE token dropping (see the module docstring).
            Defaults to False.
        label_smoothing (float): Defaults to 0.1.
        data_preprocessor (dict, optional): Defaults to a
            ``SelfSupDataPreprocessor`` giving RGB images in [0, 1].
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 tokenizer: dict,
                 token_predictor: dict,
                 mask_ratio_min: float = 0.5,
                 mask_ratio_max: float = 1.0,
                 mask_ratio_mu: float = 0.55,
                 mask_ratio_std: float = 0.25,
                 drop_tokens: bool = False,
                 label_smoothing: float = 0.1,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = unit_rgb_preprocessor()
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not 0. <= mask_ratio_min < mask_ratio_max <= 1.:
            raise ValueError('need 0 <= mask_ratio_min < mask_ratio_max <= 1, got '
                             f'{mask_ratio_min}, {mask_ratio_max}')
        if mask_ratio_std <= 0:
            raise ValueError(f'mask_ratio_std must be positive, got {mask_ratio_std}')
        if isinstance(tokenizer, dict):
            path = tokenizer.get('checkpoint')
            if path is None:
                raise ValueError(
                    'MAGEPredictorTrainer needs a trained tokenizer: set model.tokenizer.checkpoint '
                    '(e.g. the iter_N.pth of a VQGANTrainer run).')
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'tokenizer checkpoint not found: {path!r}; train the tokenizer first '
                    '(configs/demo/vqgan_*.py) or pass --cfg-options model.tokenizer.checkpoint=PATH.')
            tokenizer = MODELS.build(tokenizer)
        self.tokenizer = tokenizer
        self.token_predictor = MODELS.build(token_predictor) \
            if isinstance(token_predictor, dict) else token_predictor
        K = int(self.tokenizer.num_embeddings)
        if int(self.token_predictor.num_codes) != K:
            raise ValueError(f'token_predictor.num_codes={self.token_predictor.num_codes} but the '
                             f'tokenizer codebook has {K} entries; set token_predictor.num_codes={K}.')
        self.mask_ratio_min = mask_ratio_min
        self.mask_ratio_max = mask_ratio_max
        self.mask_ratio_mu = mask_ratio_mu
        self.mask_ratio_std = mask_ratio_std
        self.drop_tokens = drop_tokens
        self.label_smoothing = label_smoothing
        self._set_trainable()

    # ------------------------------------------------------------------ setup
    def _set_trainable(self) -> None:
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)
        for p in self.token_predictor.parameters():
            p.requires_grad_(True)
        # position ids are a buffer; nothing else to unfreeze

    def init_weights(self) -> None:
        """Init children (loads the tokenizer checkpoint, and the predictor's
        when given, e.g. to continue training) and restore trainability."""
        super().init_weights()
        self._set_trainable()

    def train(self, mode: bool = True) -> 'MAGEPredictorTrainer':
        """Tokenizer always in eval mode; the predictor follows ``mode``
        (dropout active while training), bypassing its frozen-eval override."""
        super().train(mode)
        self.tokenizer.train(False)
        nn.Module.train(self.token_predictor, mode)
        return self

    # ------------------------------------------------------------------ masks
    def sample_masks(self, batch_size: int, num_tokens: int, device: torch.device,
                     generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """One MAGE mask draw.

        Returns:
            tuple[Tensor, Tensor]: bool ``mask`` ``[B, N]`` (masked) and
            ``drop`` ``[B, N]`` (dropped from the encoder, ``drop ⊆ mask``;
            all False when ``drop_tokens`` is off).
        """
        ratio = sample_truncnorm_ratio(self.mask_ratio_mu, self.mask_ratio_std,
                                       self.mask_ratio_min, self.mask_ratio_max, generator)
        n_mask = min(num_tokens, max(1, int(math.ceil(num_tokens * ratio))))
        noise = torch.rand(batch_size, num_tokens, generator=generator).to(device)
        rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each position's noise
        mask = rank < n_mask
        if self.drop_tokens:
            n_drop = min(n_mask, int(math.ceil(num_tokens * self.mask_ratio_min)))
            drop = rank < n_drop
        else:
            drop = torch.zeros_like(mask)
        return mask, drop

    # ---------------------------------------------------------------- forward
    def predictor_logits(self, tokens: Tensor, mask: Tensor, drop: Optional[Tensor] = None) -> Tensor:
        """Codebook logits ``[B, N, K]`` of the predictor, with optional
        token dropping in its encoder.

        Args:
            tokens (Tensor): ``[B, N]`` ids.
            mask (Tensor): ``[B, N]`` bool, True = masked.
            drop (Tensor, optional): ``[B, N]`` bool ``⊆ mask``, the same
                count in every row; None/all False = no dropping.
        """
        tp = self.token_predictor
        K = tp.num_codes
        if drop is None or not bool(drop.any()):
            return tp.forward_logits(tokens, mask)[:, 1:, :K]
        tp._check_inputs(tokens, mask)
        B, N = tokens.shape
        n_keep = int((~drop[0]).sum())
        if not bool(((~drop).sum(1) == n_keep).all()):
            raise ValueError('every sample must drop the same number of tokens')
        ids = torch.where(mask, torch.full_like(tokens, tp.mask_id), tokens)
        ids = torch.cat([ids.new_full((B, 1), tp.fake_class_id), ids], dim=1)  # [B, 1+N]
        x = tp.token_emb(ids)  # [B, 1+N, D] (word + position embeddings)
        keep = torch.cat([drop.new_ones(B, 1), ~drop], dim=1)  # class slot always kept
        keep_idx = keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :1 + n_keep]
        keep_idx = keep_idx.sort(dim=1).values  # [B, 1+n_keep], slot order
        x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        for blk in tp.blocks:
            x = blk(x)
        x = tp.decoder_embed(tp.norm(x))  # [B, 1+n_keep, Dd]
        full = x[:, :1].expand(B, N + 1, x.shape[-1]).clone()  # pad with the class slot
        full.scatter_(1, keep_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        slot_mask = torch.cat([mask.new_zeros(B, 1), mask], dim=1)
        x = torch.where(slot_mask.unsqueeze(-1), x[:, :1].expand_as(full), full)
        x = x + tp.decoder_pos_embed_learned
        for blk in tp.decoder_blocks:
            x = blk(x)
        x = tp.decoder_norm(x)
        logits = tp.mlm_layer(x, tp.token_emb.word_embeddings.weight.detach())
        return logits[:, 1:, :K]

    @torch.no_grad()
    def tokenize(self, images: Tensor) -> Tensor:
        """Token ids ``[B, N]`` of ``[0, 1]`` images from the frozen tokenizer."""
        ids, _ = self.tokenizer.encode(images)
        if ids.shape[1] != self.token_predictor.num_tokens:
            raise ValueError(
                f'images {tuple(images.shape[-2:])} give {ids.shape[1]} tokens but the predictor was '
                f'built for num_tokens={self.token_predictor.num_tokens}; match the crop size and '
                'the token grid.')
        return ids

    def forward_train_step(self, images: Tensor, mask: Optional[Tensor] = None,
                           drop: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Loss of one batch; explicit masks make it deterministic.

        Returns:
            dict[str, Tensor]: ``loss``, ``acc`` (masked-token top-1), ``tokens``,
            ``mask``, ``logits``.
        """
        tokens = self.tokenize(images)
        if mask is None:
            mask, drop = self.sample_masks(*tokens.shape, tokens.device)
        mask = mask.to(tokens.device).bool()
        drop = None if drop is None else drop.to(tokens.device).bool()
        logits = self.predictor_logits(tokens, mask, drop)  # [B, N, K]
        loss = masked_token_loss(logits, tokens, mask, self.label_smoothing)
        with torch.no_grad():
            hit = (logits.argmax(-1) == tokens).float()
            acc = (hit * mask.float()).sum() / mask.float().sum().clamp_min(1.)
        return dict(loss=loss, acc=acc, tokens=tokens, mask=mask, logits=logits)

    def loss(self, inputs: Union[Tensor, List[Tensor]], data_samples: Optional[list] = None,
             **kwargs) -> Dict[str, Tensor]:
        """``loss_mtm`` (masked token modelling) and ``acc_masked`` (logged)."""
        out = self.forward_train_step(_as_batch(inputs))
        return dict(loss_mtm=out['loss'], acc_masked=out['acc'])

    def forward(self, inputs: Union[Tensor, List[Tensor]], data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``'loss'``: :meth:`loss`; ``'tensor'``/``'predict'``: the token ids
        of the images ``[B, N]``."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('tensor', 'predict'):
            return self.tokenize(_as_batch(inputs))
        raise RuntimeError(f'Invalid mode "{mode}" for MAGEPredictorTrainer')
