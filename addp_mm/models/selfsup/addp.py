"""ADDP pretraining: Alternating Denoising Diffusion Process (ICLR 2024).

One training iteration (ADDP paper Fig. 4, reference ``models_addp.py``):

1. ``z0 = VQ-Enc(x0)``: token ids of the clean images (frozen VQGAN, raw [0,1]
   pixels).
2. Two nested masks ``m_t ⊆ m_{t+1}`` (:class:`ADDPNestedMaskGenerator`).
3. The frozen token predictor runs twice: on ``z0`` masked by ``m_{t+1}``
   (probabilities ``P_next``) and by ``m_t`` (``P_t``, the training target).
4. Token-to-pixel decoding: ``x_t = VQ-Dec(where(m_t, P_next @ codebook,
   codebook[z0]))``; soft (expected) embeddings at unreliable positions, hard
   codebook entries elsewhere.
5. ``x_t`` is clamped to [0,1], ImageNet-normalised and encoded by
   :class:`~addp_mm.models.backbones.ADDPPretrainEncoder` (all 257 tokens, no dropping).
6. :class:`~addp_mm.models.necks.ADDPDecoder` replaces the cls slot and the masked slots by a mask
   token, appends embeddings of the reliable ground-truth tokens and predicts
   logits over the whole vocabulary with an MLM head tied to the *detached*
   token embedding.
7. :class:`~addp_mm.models.heads.ADDPLossHead`: soft-target cross-entropy with label smoothing 0.1
   against ``P_t`` (zero-padded to the vocabulary), averaged over ``m_t``.

Parameter names follow the official release (timm names) so converted official
checkpoints load one-to-one (``tools/model_converters/addp_to_mm.py``). The
official model also allocates ``pos_token_embed``, ``pos_mask_embed``,
``decoder_pos_embed`` and ``decoder_pred`` that no computation reads; they are
deliberately not created here (so DDP needs no ``find_unused_parameters``) and
the converter drops them as documented-unused.

Generation (:class:`~addp_mm.models.generation.AlternatingDenoisingSampler`)
uses the model only through ``num_tokens``, ``num_codes``, ``token_grid``,
:meth:`ADDP.predict_logits`, :meth:`ADDP.tokens_to_pixels` and the
tokenizer's ``encode`` / ``downsample_factor``.
"""
import inspect
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from addp_mm.models.utils.performance import PRESETS, configure_performance
from addp_mm.registry import register_model
from addp_mm.utils.pixels import IMAGENET_MEAN, IMAGENET_STD, unit_rgb_preprocessor
from addp_mm.utils.precision import AUTO, LazyCompiled
from . import mask_schedule  # noqa: F401  (registers ADDPNestedMaskGenerator)


def _ckpt_path(cfg_or_module: Union[dict, nn.Module]) -> Optional[str]:
    """The ``checkpoint`` of a frozen part, given as a config or a module."""
    if isinstance(cfg_or_module, dict):
        return cfg_or_module.get('checkpoint')
    return getattr(cfg_or_module, 'checkpoint', None)


def _build(cfg: Union[dict, nn.Module, None]) -> Optional[nn.Module]:
    """Build a part from its config; modules and None pass through."""
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg


def _check_frozen_checkpoints(tokenizer: Union[dict, nn.Module],
                              token_predictor: Union[dict, nn.Module], required: bool) -> None:
    """Fail at build time, before any heavy build, when a frozen part's file is
    not configured (``required``) or does not exist."""
    for name, cfg in (('tokenizer', tokenizer), ('token_predictor', token_predictor)):
        path = _ckpt_path(cfg)
        if path is None:
            if required:
                raise ValueError(
                    f'ADDP needs a pretrained frozen {name}: set `model.{name}.checkpoint` '
                    '(see the config variables at the top of the config for where to get it).')
        elif not osp.isfile(path):
            raise FileNotFoundError(
                f'{name} checkpoint not found: {path!r}. The config header says where it '
                'comes from (a released file, or one an earlier step writes); set its path, '
                f'e.g. --cfg-options model.{name}.checkpoint=/path/to/file.')


def _check_geometry(backbone: nn.Module, neck: nn.Module, tokenizer: nn.Module,
                    token_predictor: nn.Module) -> Tuple[int, int]:
    """One patch per VQ token and one vocabulary for all parts; returns the
    token grid ``(h, w)`` or raises a ValueError naming the setting to change."""
    img_size = backbone.img_size
    f = int(tokenizer.downsample_factor)
    if img_size[0] % f or img_size[1] % f:
        raise ValueError(f'image size {img_size} is not divisible by the tokenizer down-sampling '
                         f'factor {f}; choose an img_size that is a multiple of {f}.')
    token_grid = (img_size[0] // f, img_size[1] // f)
    if token_grid != backbone.grid_size:
        raise ValueError(
            f'image size {img_size} gives a {token_grid} VQ token grid (tokenizer /{f}) but a '
            f'{backbone.grid_size} patch grid (patch size {backbone.patch_size}); '
            'ADDP needs one patch per token: set backbone.patch_size to the tokenizer '
            'down-sampling factor or change img_size.')
    num_tokens = token_grid[0] * token_grid[1]
    tp_tokens = getattr(token_predictor, 'num_tokens', num_tokens)
    if tp_tokens != num_tokens:
        raise ValueError(f'token_predictor.num_tokens={tp_tokens} but image size {img_size} gives '
                         f'{num_tokens} tokens ({token_grid}); set token_predictor.num_tokens='
                         f'{num_tokens} or change img_size.')
    K = int(tokenizer.num_embeddings)
    tp_codes = getattr(token_predictor, 'num_codes', None)
    if tp_codes is not None and int(tp_codes) != K:
        raise ValueError(
            f'token predictor vocabulary ({tp_codes} codes) does not match the tokenizer codebook '
            f'({K} entries); use the predictor trained with this tokenizer and set '
            f'token_predictor.num_codes={K}.')
    if neck.num_codes != K or neck.num_tokens != num_tokens:
        raise ValueError(
            f'neck built for {neck.num_codes} codes / {neck.num_tokens} tokens but the '
            f'tokenizer has {K} codes and the image gives {num_tokens} tokens; drop num_codes/'
            'num_tokens from the neck config (ADDP fills them in).')
    return token_grid


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


@register_model
class ADDP(BaseSelfSupervisor):
    """ADDP pretraining algorithm (see the module docstring).

    Args:
        backbone (dict): :class:`ADDPPretrainEncoder` config.
        neck (dict): :class:`ADDPDecoder` config (``num_tokens``/``num_codes``
            are filled in from the encoder grid / tokenizer when absent).
        head (dict): :class:`ADDPLossHead` config.
        tokenizer (dict): Frozen ``VQGANTokenizer`` config with ``checkpoint``.
        token_predictor (dict): Frozen ``MAGETokenPredictor`` config with
            ``checkpoint``. Its ``train_dropout=True`` reproduces the release
            (predictor dropout active while making ``x_t`` and the target,
            reference ``engine_pretrain.py`` calls ``model.train(True)``); False
            keeps it deterministic.
        mask_generator (dict): :class:`ADDPNestedMaskGenerator` config. Defaults to the
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
                 mask_generator: Optional[dict] = None,
                 sampler: Optional[dict] = None,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_STD,
                 require_frozen_checkpoints: bool = True,
                 batch_predictor_passes: bool = False,
                 performance: Optional[Union[str, dict]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        switches = _performance_switches(performance)  # validate before the heavy build
        _check_frozen_checkpoints(tokenizer, token_predictor, require_frozen_checkpoints)
        backbone, tokenizer, token_predictor = (_build(backbone), _build(tokenizer),
                                                _build(token_predictor))
        if isinstance(neck, dict):  # the decoder's grid and vocabulary come from the parts
            neck = dict(neck)
            neck.setdefault('num_tokens', backbone.num_patches)
            neck.setdefault('num_codes', tokenizer.num_embeddings)
        if data_preprocessor is None:
            data_preprocessor = unit_rgb_preprocessor()
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tokenizer = tokenizer
        self.token_predictor = token_predictor
        if mask_generator is None or isinstance(mask_generator, dict):
            mask_generator = dict(dict(type='ADDPNestedMaskGenerator'), **(mask_generator or {}))
        self.mask_generator = _build(mask_generator)
        self.batch_predictor_passes = batch_predictor_passes
        self.sampler = _build(sampler)
        for name, value in (('pixel_mean', pixel_mean), ('pixel_std', pixel_std)):
            self.register_buffer(
                name, torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.token_grid = _check_geometry(self.backbone, self.neck, self.tokenizer,
                                          self.token_predictor)
        #: token sequence length ``h*w`` and codebook size, read by the sampler
        self.num_tokens = self.token_grid[0] * self.token_grid[1]
        self.num_codes = int(self.tokenizer.num_embeddings)
        self._freeze(self.tokenizer)
        self._freeze(self.token_predictor)
        #: performance: pad the decoder to :attr:`max_visible` appended slots
        #: (fixed shapes every training step; see :meth:`pads_decoder`)
        self.static_decoder_length: Union[bool, str] = False
        self.compile_trainable: Union[bool, dict] = False
        self._images_checked = False
        if switches:
            configure_performance(self, **switches)

    # ------------------------------------------------------- performance
    @property
    def max_visible(self) -> int:
        """The most visible tokens a drawn ``m_t`` leaves (lowest schedule ratio)."""
        ms = self.mask_generator
        cached = self.__dict__.get('_max_visible')
        if cached is not None and cached[0] is ms:
            return cached[1]
        ratios = getattr(ms, 'ratios', None)
        value = self.num_tokens if ratios is None else \
            self.num_tokens - ms.num_masked(ratios[0], self.num_tokens)
        self.__dict__['_max_visible'] = (ms, value)
        return value

    def pads_decoder(self) -> bool:
        """Whether a training step pads the decoder (``ADDPDecoder.forward(pad_to)``):
        ``static_decoder_length`` True, or ``'auto'`` while the decoder blocks run
        compiled (``compile_trainable``); an eager decoder runs on the real length."""
        if self.static_decoder_length != AUTO:
            return bool(self.static_decoder_length)
        compiled = self.neck.__dict__.get('_compiled_blocks')
        return compiled is not None and not compiled.failed

    def set_compile_trainable(self, compile_cfg: Union[bool, dict]) -> None:
        """``torch.compile`` the encoder and the decoder's block stack (or undo
        it with False). Compiled lazily (eager if compiling fails); with
        ``static_decoder_length`` every step has the same shapes, otherwise
        torch recompiles once with dynamic shapes. No state-dict change."""
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
                Drawn with the mask generator when None (then ``mask_t_next``
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
            mask_t, mask_t_next, n_t, _ = self.mask_generator(B, N, images.device, generator,
                                                              return_counts=True)
            num_visible = N - n_t
            if self.pads_decoder():
                pad_to = max(self.max_visible, num_visible)
        elif mask_t_next is None:
            raise ValueError('give both masks or neither')
        else:
            mask_t = mask_t.to(images.device, torch.float32)
            mask_t_next = mask_t_next.to(images.device, torch.float32)
            if bool((mask_t > mask_t_next).any()):
                raise ValueError('mask_t_next must contain every position masked by mask_t')
            if self.pads_decoder():
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


__all__ = ['ADDP']
