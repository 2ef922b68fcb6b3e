"""ADDP encoder as an mmpretrain ``VisionTransformer`` for classification and
semantic segmentation (``out_type='featmap'`` with ``out_indices`` gives the
stride-16 maps that mmseg's ``Feature2Pyramid`` + ``UPerHead`` take, the
MAE/BEiT UperNet protocol).

References:
    * ADDP: Learning General Representations for Image Recognition and
      Generation with Alternating Denoising Diffusion Process (ICLR 2024),
      https://arxiv.org/abs/2306.05423; official fine-tuning code
      ``main_finetune.py`` / ``models_vit.py`` (built on MAE's).
    * MAE (https://arxiv.org/abs/2111.06377) for the fine-tuning and linear
      probing protocols, and timm's ``vision_transformer.py``.

The pretraining encoder of ADDP (``addp_mm.models.backbones.ADDPPretrainEncoder``) is a
plain pre-LN ViT with two extra LayerNorms: ``tokenizer_norm`` on the 257
input tokens (after the position embedding, before block 0) and the final
``norm``. The released fine-tuning model keeps neither: it loads the
pretraining state dict non-strictly by name, so both are silently dropped and
the head is ``fc_norm(mean of patch tokens) -> linear`` (reference
``models_vit.py`` / ``main_finetune.py``).
:class:`ADDPVisionTransformer` reproduces that by default and can keep both
norms on request (``use_tokenizer_norm=True, final_norm=True``).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmpretrain.models.backbones import VisionTransformer

from addp_mm.models.utils.encoder_checkpoint import (EncoderLayout, fit_pos_embed,
                                                     load_encoder_checkpoint,
                                                     resolve_pretrained, timm_vit_to_mmpretrain)
from addp_mm.models.utils.out_indices import check_out_indices
from addp_mm.registry import register_model_everywhere

__all__ = ['ADDPVisionTransformer']


@register_model_everywhere
class ADDPVisionTransformer(VisionTransformer):
    """ViT backbone that loads ADDP-pretrained encoder weights.

    A thin subclass of mmpretrain's :class:`VisionTransformer` (same key
    names, ``get_layer_depth`` for layer-wise lr decay, ``frozen_stages``,
    ``out_type``, pos-embed interpolation in ``forward``). What it adds:

    * **Loading** in :meth:`init_weights` (never in ``__init__``) from
      ``pretrained=`` or ``init_cfg=dict(type='Pretrained', checkpoint=...)``
      (also inside an ``init_cfg`` list), through
      :mod:`addp_mm.models.utils.encoder_checkpoint`:
      our pretraining checkpoints (``state_dict`` with ``backbone.*`` keys),
      converted or official ADDP releases (``{'model': {...}}`` with timm
      names) and official fine-tuning files. Files are read with
      ``weights_only=True`` (:func:`addp_mm.utils.checkpoint.load_external_state_dict`);
      mmengine's ``Pretrained`` initializer, which unpickles freely, is not used.
      Every key is accounted for: the loaded ones, the deliberately ignored
      ones (with the reason) and the other parts of the file (decoder,
      tokenizer, token predictor) are logged and kept in
      :attr:`pretrained_report`. Missing encoder keys or shape mismatches raise
      :class:`~addp_mm.utils.checkpoint.CheckpointError`.
    * **Pos-embed resizing** to the configured ``img_size`` (bicubic, cls row
      kept, like MAE's ``interpolate_pos_embed``), with a clear error when the
      checkpoint's grid is not square and ``pretrained_patch_resolution`` is
      not given.
    * **The pre-block LayerNorm option.** ``use_tokenizer_norm=False``
      (default) is the reference fine-tuning: the pretraining
      ``tokenizer_norm`` is dropped. ``True`` builds the LayerNorm as
      mmpretrain's ``pre_norm`` and loads ``tokenizer_norm.*`` into it, so the
      blocks see the same input distribution as in pretraining (the
      pretraining's Dropout(0.1) after it is not rebuilt; ``drop_rate`` acts
      before the norm). Unlike mmpretrain's ``pre_norm=True``, the patch
      embedding keeps its bias, which ADDP has.
    * ``final_norm`` defaults to False (reference: the pretraining ``norm`` is
      dropped); with True the pretraining ``norm.*`` is loaded into ``ln1``.
      With ``out_type='avg_featmap'`` (default) the pooled patch tokens go
      through ``ln2``, the reference ``fc_norm``, which is freshly initialised.

    Args:
        arch (str | dict): mmpretrain ViT arch name (``'base'``, ``'large'``,
            ...) or a dict with ``embed_dims``, ``num_layers``, ``num_heads``
            and ``feedforward_channels``. Defaults to ``'base'``.
        img_size (int | tuple): Input size the pos-embed is built for; the
            checkpoint's pos-embed is resized to it on load. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        out_type (str): See :class:`VisionTransformer`. Defaults to
            ``'avg_featmap'`` (mean of patch tokens, then ``ln2`` = fc_norm).
        final_norm (bool): Apply (and load) the pretraining final ``norm``.
            Defaults to False, as the reference fine-tuning.
        use_tokenizer_norm (bool): Apply (and load) the pretraining
            ``tokenizer_norm`` before the first block. Defaults to False, as
            the reference fine-tuning.
        pretrained (str, optional): Checkpoint to load in :meth:`init_weights`.
            Same as ``init_cfg=dict(type='Pretrained', checkpoint=...)``; give
            only one. Defaults to None.
        pretrained_patch_resolution (tuple[int, int], optional): The
            ``(rows, cols)`` patch grid of the checkpoint's pos-embed. Needed
            only to resize a non-square grid; square grids are inferred.
            Defaults to None.
        init_cfg (dict | list[dict], optional): Initialization config. A
            ``type='Pretrained'`` entry (``checkpoint``, optional ``prefix``)
            is handled by this class as described above; other entries go to
            mmengine. Defaults to None.
        **kwargs: Other arguments of :class:`VisionTransformer` (e.g.
            ``drop_path_rate``, ``frozen_stages``, ``out_indices``,
            ``norm_cfg``). ``pre_norm`` is not accepted: use
            ``use_tokenizer_norm``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 out_type: str = 'avg_featmap',
                 final_norm: bool = False,
                 use_tokenizer_norm: bool = False,
                 pretrained: Optional[str] = None,
                 pretrained_patch_resolution: Optional[Sequence[int]] = None,
                 init_cfg: Union[dict, List[dict], None] = None,
                 **kwargs) -> None:
        if 'pre_norm' in kwargs:
            raise TypeError(
                'ADDPVisionTransformer does not take `pre_norm` (mmpretrain\'s pre_norm also '
                'drops the patch-embed bias); use `use_tokenizer_norm=True` to apply the '
                'pretraining tokenizer_norm before the blocks.')
        pretrained, prefix, rest_init_cfg = resolve_pretrained(pretrained, init_cfg,
                                                               type(self).__name__)
        if pretrained_patch_resolution is not None:
            pretrained_patch_resolution = tuple(int(s) for s in pretrained_patch_resolution)
            if len(pretrained_patch_resolution) != 2:
                raise ValueError('pretrained_patch_resolution must be (rows, cols), got '
                                 f'{pretrained_patch_resolution}')
        if 'out_indices' in kwargs:  # a clear error instead of mmpretrain's assertion
            kwargs['out_indices'] = list(check_out_indices(
                kwargs['out_indices'], self._arch_num_layers(arch)))

        patch_cfg = dict(kwargs.pop('patch_cfg', None) or {})
        patch_cfg.setdefault('bias', True)  # ADDP's patch embedding has a bias
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            out_type=out_type,
            final_norm=final_norm,
            pre_norm=use_tokenizer_norm,
            patch_cfg=patch_cfg,
            init_cfg=rest_init_cfg,
            **kwargs)
        self.use_tokenizer_norm = use_tokenizer_norm
        self.pretrained = pretrained
        self.pretrained_prefix = prefix
        self.pretrained_patch_resolution = pretrained_patch_resolution
        self.pretrained_report: Optional[Dict[str, list]] = None

    @classmethod
    def _arch_num_layers(cls, arch: Union[str, dict]) -> int:
        if isinstance(arch, str):
            settings = cls.arch_zoo.get(arch.lower())
            if settings is None:
                raise ValueError(f'unknown arch {arch!r}; choose from {sorted(cls.arch_zoo)}')
            return int(settings['num_layers'])
        return int(arch['num_layers'])

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Default initialisation, then the pretrained encoder if one is set."""
        already_initialised = self._is_init  # a second call must not reload
        super().init_weights()
        if self.pretrained and not already_initialised:
            self.load_pretrained(self.pretrained, prefix=self.pretrained_prefix)

    def encoder_layout(self) -> EncoderLayout:
        """What this backbone takes from an ADDP encoder checkpoint."""
        return EncoderLayout(
            embed_dims=self.embed_dims,
            num_layers=self.num_layers,
            patch_size=tuple(self.patch_embed.projection.kernel_size),
            grid=tuple(self.patch_resolution),
            cls_token=self.with_cls_token,
            tokenizer_norm=self.use_tokenizer_norm,
            final_norm=self.final_norm,
            fresh=lambda k: k.startswith('ln2.'),
            rename=timm_vit_to_mmpretrain,
            pretrained_grid=self.pretrained_patch_resolution,
            interpolate_mode=self.interpolate_mode,
            fresh_reason='fc_norm of the average-pooling head')

    def load_pretrained(self, path: str, prefix: Optional[str] = None) -> Dict[str, list]:
        """Load ADDP encoder weights from ``path`` into this backbone.

        Args:
            path (str): Checkpoint path (any format listed in the class doc).
            prefix (str, optional): Key prefix to select, e.g. ``'backbone.'``.
                ``'backbone.'`` is recognised automatically. Defaults to None.

        Returns:
            dict: ``loaded`` (mmpretrain key names), ``ignored`` (timm names of
            encoder keys deliberately not used, with the reason),
            ``not_encoder`` (count of the other keys of the file per top-level
            name) and ``fresh``; see
            :func:`~addp_mm.models.utils.encoder_checkpoint.load_encoder_state_dict`.
            Also stored in :attr:`pretrained_report`.
        """
        self.pretrained_report = load_encoder_checkpoint(self, path, self.encoder_layout(),
                                                         prefix=prefix)
        return self.pretrained_report

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs) -> None:
        """State-dict pre-hook: resize a foreign-grid pos-embed with clear errors."""
        name = prefix + 'pos_embed'
        if name in state_dict and state_dict[name].shape != self.pos_embed.shape:
            rows = state_dict[name].shape[1]
            # a model without cls token may be given a table with a cls row
            has_cls_row = self.with_cls_token or rows == self.pos_embed.shape[1] + 1 or (
                math.isqrt(rows - 1)**2 == rows - 1 and math.isqrt(rows)**2 != rows)
            state_dict[name] = fit_pos_embed(state_dict[name], has_cls_row,
                                             self.encoder_layout(), 'the state dict')

    # ---------------------------------------------------------- layer decay
    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id for layer-wise lr decay (BEiT/MAE rule).

        ``cls_token``, ``pos_embed``, ``patch_embed`` and the optional
        ``pre_norm`` (tokenizer_norm, which sits before block 0) get 0,
        ``layers.i`` gets ``i + 1``, everything else ``num_layers + 1``.

        Args:
            param_name (str): Parameter name.
            prefix (str): Prefix of the backbone's names. Defaults to ''.

        Returns:
            tuple[int, int]: ``(layer_id, num_layers + 2)``.
        """
        if param_name.startswith(prefix) and param_name[len(prefix):].startswith('pre_norm.'):
            return 0, self.num_layers + 2
        return super().get_layer_depth(param_name, prefix)

    def train(self, mode: bool = True) -> 'ADDPVisionTransformer':
        """Set train mode, keeping frozen stages in eval mode."""
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self
