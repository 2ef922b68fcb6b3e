"""``ADDPGenerator``: unconditional generation and inpainting from Python.

An inferencer in the style of mmpretrain's (``preprocess`` -> ``forward`` ->
``visualize`` -> ``postprocess``), built from a config path, a ``Config`` or a
model-index name plus a local checkpoint::

    from addp_mm.apis import ADDPGenerator

    gen = ADDPGenerator('configs/addp_gen/addp_vit-base-p16_iterdec-cosine-20step_in1k-256px.py',
                        pretrained='checkpoints/addp-vit-base-16_mm.pth', device='cuda')
    out = gen(num_images=16, seed=0, out_dir='samples/')       # PNGs + grid.png
    out = gen(['cat.png'], boxes=[(64, 64, 192, 192)], num_steps=20)  # inpainting
    out['images'][0]  # [H, W, 3] uint8 RGB

Sample ``i`` uses the seed ``seed + i`` (one ``torch.Generator`` per sample),
so a result does not depend on the batch size. ``tools/sample.py`` is a
command line over this class.
"""
import os
import os.path as osp
import warnings
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmpretrain.apis.base import BaseInferencer
from torch import Tensor

from .generation_model import (GEN_PREFIXES, NOT_NEEDED_FOR_GENERATION,  # noqa: F401
                               GenerationWeightsError, _resolve_config, build_generation_model,
                               load_generation_weights)
from .image_io import ImageLike, fit_image, fit_mask, grid_of, save_png, step_strip, to_pil
from .scope import codebase_scope

__all__ = ['ADDPGenerator', 'GenerationWeightsError', 'load_generation_weights',
           'build_generation_model', 'check_out_dir', 'resolve_device', 'SAMPLER_OPTIONS']

#: sampler settings that can be changed per call (``None`` = the config's)
SAMPLER_OPTIONS = ('num_steps', 'schedule', 'choice_temperature', 'temperature_strategy',
                   'token_temperature', 'top_p')


def resolve_device(device: Union[None, str, torch.device]) -> torch.device:
    """``device``, or CUDA when available and CPU otherwise; a clear error without CUDA."""
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu'")
    return dev


def _as_list(inputs) -> list:
    """One image or a sequence of images -> a list."""
    if isinstance(inputs, Tensor) and inputs.ndim == 4:
        return list(inputs)
    if isinstance(inputs, (str, np.ndarray, Tensor)) or hasattr(inputs, 'convert'):
        return [inputs]
    return list(inputs)


def check_out_dir(out_dir: str, save_steps: bool = False) -> None:
    """Create ``out_dir`` (and ``steps/``) now and make sure files can be written there."""
    from addp_mm.utils.outputs import OutputError, check_output_dir
    try:
        check_output_dir(out_dir, '--out-dir')
    except OutputError as err:
        raise ValueError(str(err)) from None
    os.makedirs(osp.join(out_dir, 'steps') if save_steps else out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise ValueError(f'output folder {out_dir!r} is not writable')


class ADDPGenerator(BaseInferencer):
    """Sample and inpaint images with a pretrained ADDP model.

    Args:
        model (str | Config): A config path (``configs/addp_gen/*.py`` or any
            ADDP pretraining config), a ``Config``, or a model-index name
            (``mmpretrain.list_models('addp*')``).
        pretrained (str, optional): Local checkpoint: ours from
            ``tools/train.py`` or an official release converted with
            ``tools/model_converters/addp_to_mm.py``. None keeps random
            weights (for tests; a warning says so). Defaults to None.
        device (str | torch.device, optional): Defaults to CUDA when
            available, else CPU.
        sampler (dict, optional): Default sampler settings overriding the
            config's (``num_steps``, ``schedule``, ``choice_temperature``,
            ``temperature_strategy``, ``token_temperature``, ``top_p``).
            Defaults to None.
    """

    def __init__(self,
                 model: Union[str, Config],
                 pretrained: Optional[str] = None,
                 device: Union[None, str, torch.device] = None,
                 sampler: Optional[dict] = None) -> None:
        if pretrained is True:
            raise ValueError('nothing is downloaded: pass the local path of the checkpoint as '
                             '`pretrained` (the metafile names the release file)')
        cfg = _resolve_config(model)
        with codebase_scope(cfg.get('default_scope', 'mmpretrain')):
            net = build_generation_model(cfg, sampler)
        if pretrained:
            load_generation_weights(net, pretrained)
        else:
            warnings.warn('ADDPGenerator without `pretrained`: the model keeps random weights')
            net.init_weights()
        self._setup(net, cfg, device, sampler)

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg: Config,
                   device: Union[None, str, torch.device] = None,
                   sampler: Optional[dict] = None) -> 'ADDPGenerator':
        """Wrap an ADDP model that is already built (and loaded) from ``cfg``."""
        self = cls.__new__(cls)
        self._setup(model, cfg, device, sampler)
        return self

    def _setup(self, model: torch.nn.Module, cfg: Config, device, sampler: Optional[dict]) -> None:
        self.device = resolve_device(device)
        self.config = cfg
        self.visualizer = None
        self.model = model.to(self.device).eval()
        self.sampler = self.model.sampler
        self._sampler_cfg = dict(cfg.model.get('sampler') or
                                 dict(type='AlternatingDenoisingSampler'))
        self._sampler_cfg.update({k: v for k, v in (sampler or {}).items() if v is not None})
        n = self.sampler.get_num_tokens(self.model)
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f'{n} tokens is not a square grid')
        self.grid_hw = (side, side)
        #: the model's image side in pixels
        self.image_size = side * int(self.model.tokenizer.downsample_factor)
        self.pipeline = self._init_pipeline(self.config)

    def _init_pipeline(self, cfg: Config) -> Callable:
        """Image -> ``[3, S, S]`` in [0, 1]: shorter side to ``S`` (bicubic), centre crop."""
        return partial(fit_image, size=self.image_size)

    # ------------------------------------------------------------------ steps
    def get_sampler(self, **overrides):
        """The configured sampler, or a new one with ``overrides`` (``None`` = keep)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(overrides) - set(SAMPLER_OPTIONS)
        if unknown:
            raise ValueError(f'unknown sampler options {sorted(unknown)}; use {SAMPLER_OPTIONS}')
        if not overrides:
            return self.sampler
        from mmpretrain.registry import MODELS
        with codebase_scope('mmpretrain'):  # whatever scope another inferencer left
            return MODELS.build({**self._sampler_cfg, **overrides})

    def preprocess(self,
                   inputs: Optional[Sequence[ImageLike]] = None,
                   num_images: int = 16,
                   seed: int = 0,
                   masks: Optional[Sequence] = None,
                   boxes: Optional[Sequence[Sequence[int]]] = None,
                   batch_size: int = 16) -> Iterator[dict]:
        """Yield batches: ``indices``, ``seeds`` and, to inpaint, ``images``
        (``[b, 3, S, S]`` in [0, 1]) with ``regions`` (pixel or token masks)."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        S = self.image_size
        if inputs is None:
            if masks is not None or boxes is not None:
                raise ValueError('masks/boxes need the images to inpaint')
            if num_images < 1:
                raise ValueError(f'num_images must be >= 1, got {num_images}')
            for start in range(0, num_images, batch_size):
                idx = list(range(start, min(start + batch_size, num_images)))
                yield dict(indices=idx, seeds=[seed + i for i in idx])
            return
        inputs = _as_list(inputs)
        if (masks is None) == (boxes is None):
            raise ValueError('inpainting needs exactly one of masks=[...] (one per image) or '
                             'boxes=[(top, left, bottom, right)] (model-size pixels)')
        regions = self._regions(inputs, masks, boxes)
        for start in range(0, len(inputs), batch_size):
            idx = list(range(start, min(start + batch_size, len(inputs))))
            yield dict(indices=idx, seeds=[seed + i for i in idx],
                       images=torch.stack([self.pipeline(inputs[i]) for i in idx]),
                       regions=torch.stack([regions[i] for i in idx]))

    def _regions(self, inputs: list, masks, boxes) -> List[Tensor]:
        S = self.image_size
        if boxes is not None:
            boxes = [tuple(boxes)] if len(boxes) == 4 and all(
                isinstance(v, (int, np.integer)) for v in boxes) else [tuple(b) for b in boxes]
            if len(boxes) == 1:
                boxes = boxes * len(inputs)
            if len(boxes) != len(inputs):
                raise ValueError(f'{len(boxes)} boxes for {len(inputs)} images')
            out = []
            for box in boxes:
                top, left, bottom, right = (int(v) for v in box)
                if not (0 <= top < bottom <= S and 0 <= left < right <= S):
                    raise ValueError(f'box {list(box)} must satisfy 0 <= TOP < BOTTOM <= {S} and '
                                     f'0 <= LEFT < RIGHT <= {S}')
                region = torch.zeros(1, S, S)
                region[:, top:bottom, left:right] = 1
                out.append(region)
            return out
        if not isinstance(masks, (list, tuple)):
            masks = [masks]
        if len(masks) != len(inputs):
            raise ValueError(f'{len(masks)} masks for {len(inputs)} images')
        out = []
        for img, m in zip(inputs, masks):
            w, h = to_pil(img).size
            r = fit_mask(m, (h, w), S, self.grid_hw)
            out.append(r if r.ndim == 3 else torch.nn.functional.interpolate(
                r[None, None], size=(S, S), mode='nearest')[0])
        return out

    @torch.no_grad()
    def forward(self, batch: dict, sampler=None, return_steps: bool = False) -> dict:
        """Run the sampler on one batch.

        Returns:
            dict: ``indices``, ``seeds``, ``images`` (uint8 ``[b, 3, H, W]``, CPU),
            ``tokens`` (``[b, h*w]``), ``steps`` (uint8 strips or None) and,
            for inpainting, ``regions`` (bool token masks).
        """
        from addp_mm.utils.pixels import images_to_uint8
        sampler = sampler or self.sampler
        if 'images' in batch:
            out = sampler.inpaint(self.model, batch['images'], batch['regions'], seeds=batch['seeds'],
                                  return_trajectory=return_steps)
        else:
            out = sampler.sample(self.model, seeds=batch['seeds'], return_trajectory=return_steps)
        imgs = images_to_uint8(out['images']).cpu()
        steps = None
        if return_steps:
            steps = [step_strip(out['trajectory'], j, self.grid_hw, imgs.shape[-2:])
                     for j in range(len(imgs))]
        res = dict(indices=batch['indices'], seeds=batch['seeds'], images=imgs,
                   tokens=out['tokens'].cpu(), steps=steps)
        if 'region' in out:
            res['regions'] = out['region'].cpu()
        return res

    @staticmethod
    def visualize(result: dict, out_dir: str) -> None:
        """Write a batch's images as ``{index:06d}.png`` (and ``steps/{index:06d}.png``)."""
        for j, i in enumerate(result['indices']):
            save_png(result['images'][j], osp.join(out_dir, f'{i:06d}.png'))
            if result['steps'] is not None:
                save_png(result['steps'][j], osp.join(out_dir, 'steps', f'{i:06d}.png'))

    @staticmethod
    def postprocess(results: List[dict], grid: Optional[Tensor]) -> dict:
        """Batches -> ``images`` / ``steps`` (``[H, W, 3]`` uint8 arrays), ``seeds``,
        ``tokens`` (``[h*w]`` arrays), ``grid`` (array or None) and, when
        inpainting, ``regions`` (bool token masks)."""
        hwc = lambda t: t.permute(1, 2, 0).numpy()  # noqa: E731
        out: Dict[str, list] = dict(images=[], seeds=[], tokens=[], steps=None)
        for r in results:
            out['images'].extend(hwc(im) for im in r['images'])
            out['seeds'].extend(r['seeds'])
            out['tokens'].extend(t.numpy() for t in r['tokens'])
            if r['steps'] is not None:
                out['steps'] = (out['steps'] or []) + [hwc(s) for s in r['steps']]
            if 'regions' in r:
                out.setdefault('regions', []).extend(m.numpy() for m in r['regions'])
        out['grid'] = None if grid is None else hwc(grid)
        return out

    # ------------------------------------------------------------------ call
    def __call__(self,
                 inputs: Optional[Sequence[ImageLike]] = None,
                 num_images: Optional[int] = None,
                 seed: int = 0,
                 masks: Optional[Sequence] = None,
                 boxes: Optional[Sequence[Sequence[int]]] = None,
                 batch_size: int = 16,
                 num_steps: Optional[int] = None,
                 schedule: Optional[str] = None,
                 choice_temperature: Optional[float] = None,
                 temperature_strategy: Optional[str] = None,
                 token_temperature: Optional[float] = None,
                 top_p: Optional[float] = None,
                 return_steps: bool = False,
                 out_dir: Optional[str] = None,
                 grid_max: int = 64,
                 keep_images: bool = True,
                 on_batch: Optional[Callable[[dict], None]] = None,
                 show_progress: bool = False) -> dict:
        """Generate ``num_images`` samples, or inpaint ``inputs``.

        Args:
            inputs (list, optional): Images to inpaint (paths, PIL images,
                ``[H, W, 3]`` uint8 arrays or ``[3, H, W]`` tensors in [0, 1]);
                each is resized (shorter side) and centre-cropped to the
                model size. None = unconditional generation.
            num_images (int, optional): Samples to draw without inputs
                (inpainting writes one image per input: repeat an input for
                several). Defaults to None (16 samples).
            seed (int): Sample ``i`` uses ``seed + i``. Defaults to 0.
            masks (list, optional): One region mask per image (non-zero =
                regenerate), of the image's size, the model size or the token
                grid.
            boxes (list, optional): ``(top, left, bottom, right)`` in
                model-size pixels, one for all images or one per image.
            batch_size (int): Defaults to 16.
            num_steps, schedule, choice_temperature, temperature_strategy,
                token_temperature, top_p: Sampler settings for this call
                (None = the configured ones).
            return_steps (bool): Also return per-step strips (``x_t`` above,
                mask below). Defaults to False.
            out_dir (str, optional): Write ``000000.png``..., ``grid.png`` and,
                with ``return_steps``, ``steps/*.png``. Defaults to None.
            grid_max (int): Images in the grid. Defaults to 64.
            keep_images (bool): Return the images (False for long runs that
                only write them). Defaults to True.
            on_batch (callable, optional): Called with each batch's result
                (uint8 ``images [b, 3, H, W]`` ...), e.g. to compute metrics.
            show_progress (bool): A tqdm bar over images. Defaults to False.

        Returns:
            dict: See :meth:`postprocess`; ``num_images`` is always set.
        """
        if inputs is not None and num_images is not None:
            raise ValueError('num_images counts unconditional samples; inpainting writes one '
                             'image per input: drop num_images and repeat an input for several '
                             'inpaintings of it')
        num_images = 16 if num_images is None else num_images
        sampler = self.get_sampler(
            num_steps=num_steps, schedule=schedule, choice_temperature=choice_temperature,
            temperature_strategy=temperature_strategy, token_temperature=token_temperature,
            top_p=top_p)
        if out_dir is not None:
            check_out_dir(out_dir, return_steps)
        batches = self.preprocess(inputs, num_images, seed, masks, boxes, batch_size)
        total = num_images if inputs is None else len(_as_list(inputs))
        bar = None
        if show_progress:
            from tqdm import tqdm
            bar = tqdm(total=total, desc='sampling', unit='img')
        kept, grid_imgs, count = [], [], 0
        for batch in batches:
            res = self.forward(batch, sampler, return_steps)
            if out_dir is not None:
                self.visualize(res, out_dir)
            if on_batch is not None:
                on_batch(res)
            if len(grid_imgs) < grid_max:
                grid_imgs.extend(res['images'][:grid_max - len(grid_imgs)])
            if keep_images:
                kept.append(res)
            count += len(res['indices'])
            if bar is not None:
                bar.update(len(res['indices']))
        if bar is not None:
            bar.close()
        grid = grid_of(grid_imgs) if grid_imgs else None
        if out_dir is not None and grid is not None:
            save_png(grid, osp.join(out_dir, 'grid.png'))
        out = self.postprocess(kept, grid)
        out['num_images'] = count
        return out
