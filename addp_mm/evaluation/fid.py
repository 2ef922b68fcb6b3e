"""FID and Inception Score for ADDP's unconditional generation (the reference's
protocol: torch-fidelity ``--isc --fid`` against the 50k ImageNet-val images at 256 px).

The paper's numbers come from ``fidelity --isc --fid --input1 GEN --input2 VAL256``
(torch-fidelity): Inception-v3 pool features (2048-d) for FID, the unbiased
logits for IS (10 splits, samples shuffled with seed 2020). This module
re-implements that arithmetic (in :mod:`addp_mm.evaluation.fid_stats`) and uses
torch-fidelity's *network* (``FeatureExtractorInceptionV3``) loaded **offline**
from a weights file the user supplies (``weights-inception-2015-12-05-6726825d.pth`` from the
torch-fidelity v0.2.0 release). Nothing is downloaded.

Any ``nn.Module`` can stand in for the Inception network (tests use a tiny
one): it receives ``uint8`` images ``[B, 3, H, W]`` and returns either a
feature tensor ``[B, D]`` or a tuple ``(features [B, D], logits [B, C])``.

Reference statistics are stored as ``.npz`` with arrays ``mu`` and ``sigma``
(the pytorch-fid format), so either tool's files can be reused.
"""
import os
import os.path as osp
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS
from torch import Tensor, nn

from addp_mm.utils.pixels import images_to_uint8
from .fid_stats import (feature_statistics, frechet_distance, inception_score, load_statistics,
                        save_statistics)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
INCEPTION_WEIGHTS_HELP = (
    'Download the torch-fidelity Inception-v3 weights once '
    '(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/'
    'weights-inception-2015-12-05-6726825d.pth) and pass the local file path; '
    'nothing is downloaded at run time.')

__all__ = [
    'IMAGE_EXTENSIONS', 'feature_statistics', 'frechet_distance', 'inception_score',
    'build_inception', 'FeatureExtractor', 'list_images',
    'load_image_uint8', 'iter_image_batches', 'extract_features', 'folder_features',
    'save_statistics', 'load_statistics', 'reference_statistics', 'compute_fid_is',
    'ADDPGenerationMetric'
]


# ---------------------------------------------------------------------------
# Feature networks
# ---------------------------------------------------------------------------
def build_inception(weights_path: str, device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """torch-fidelity's Inception-v3 (``inception-v3-compat``) from a local file.

    Args:
        weights_path (str): Path of ``weights-inception-2015-12-05-6726825d.pth``.
        device (str | torch.device): Where to put it. Defaults to ``'cpu'``.

    Returns:
        nn.Module: Maps uint8 ``[B, 3, H, W]`` to ``(pool [B, 2048], logits_unbiased [B, 1008])``.

    Raises:
        FileNotFoundError: If ``weights_path`` is not a file.
    """
    if not weights_path or not osp.isfile(str(weights_path)):
        raise FileNotFoundError(
            f'Inception-v3 weights file not found: {weights_path!r}. {INCEPTION_WEIGHTS_HELP}')
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as err:  # pragma: no cover - torch-fidelity is in requirements.txt
        raise ImportError('FID/IS with Inception-v3 needs torch-fidelity '
                          '(pip install torch-fidelity==0.4.0)') from err
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
    # torch-fidelity reads the file with torch.load(weights_only=False); route
    # that one call through addp_mm's loader (weights_only=True, never runs code)
    real_torch = fidelity_inception.torch
    fidelity_inception.torch = _SafeLoadTorch()
    try:
        net = FeatureExtractorInceptionV3(
            'inception-v3-compat', ['2048', 'logits_unbiased'],
            feature_extractor_weights_path=str(weights_path))
    finally:
        fidelity_inception.torch = real_torch
    return net.to(device).eval()


class _SafeLoadTorch:
    """``torch`` with ``load`` replaced by :func:`addp_mm.utils.checkpoint.safe_torch_load`."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location='cpu', **kwargs):
        from addp_mm.utils.checkpoint import safe_torch_load
        return safe_torch_load(f, map_location=map_location)


class FeatureExtractor:
    """Uniform wrapper: ``extractor(uint8 images) -> (features, logits or None)``.

    Args:
        network (nn.Module): The feature network. It is called on uint8
            ``[B, 3, H, W]`` images and returns ``features`` or
            ``(features, logits)``.
        device (str | torch.device, optional): Device the images are moved to;
            defaults to the network's parameter device (CPU if it has none).
    """

    def __init__(self, network: nn.Module, device: Optional[Union[str, torch.device]] = None) -> None:
        self.network = network.eval()
        if device is None:
            param = next(iter(network.parameters()), None)
            device = param.device if param is not None else 'cpu'
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        images = images_to_uint8(images).to(self.device)
        out = self.network(images)
        if isinstance(out, (tuple, list)):
            feats = out[0]
            logits = out[1] if len(out) > 1 else None
        elif isinstance(out, dict):
            feats = out.get('2048', out.get('features'))
            logits = out.get('logits_unbiased', out.get('logits'))
        else:
            feats, logits = out, None
        feats = feats.reshape(feats.shape[0], -1).float().cpu()
        logits = None if logits is None else logits.reshape(logits.shape[0], -1).float().cpu()
        return feats, logits


def _as_extractor(extractor: Union[FeatureExtractor, nn.Module]) -> FeatureExtractor:
    return extractor if isinstance(extractor, FeatureExtractor) else FeatureExtractor(extractor)


# ---------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------
def list_images(folder: str) -> List[str]:
    """Sorted image files directly in ``folder`` or its sub-folders."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder!r}')
    files = []
    for root, _, names in os.walk(folder):
        files.extend(osp.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found under {folder!r}')
    return sorted(files)


def load_image_uint8(path: str) -> Tensor:
    """Read an image as RGB uint8 ``[3, H, W]`` (as torch-fidelity does, via PIL)."""
    from PIL import Image
    with Image.open(path) as img:
        arr = np.array(img.convert('RGB'), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def iter_image_batches(paths: Sequence[str], batch_size: int = 64) -> Iterator[Tensor]:
    """Yield uint8 batches ``[b, 3, H, W]``; all images of a batch must share a size."""
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        imgs = [load_image_uint8(p) for p in chunk]
        shapes = {tuple(im.shape) for im in imgs}
        if len(shapes) > 1:
            raise ValueError(f'images of different sizes in one batch ({sorted(shapes)}), e.g. '
                             f'{chunk[0]}; resize them first (tools/dataset_converters/'
                             'prepare_imagenet_val256.py) or use --batch-size 1')
        yield torch.stack(imgs)


def extract_features(batches: Iterable[Tensor], extractor: Union[FeatureExtractor, nn.Module],
                     progress: bool = False, total: Optional[int] = None
                     ) -> Tuple[Tensor, Optional[Tensor]]:
    """Run ``extractor`` over image batches; returns concatenated ``(features, logits)``."""
    extractor = _as_extractor(extractor)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=total, desc='features', unit='batch')
    feats, logits = [], []
    for batch in batches:
        f, lg = extractor(batch)
        feats.append(f)
        if lg is not None:
            logits.append(lg)
    if not feats:
        raise ValueError('no images to extract features from')
    return torch.cat(feats), (torch.cat(logits) if logits else None)


def folder_features(folder: str, extractor: Union[FeatureExtractor, nn.Module], batch_size: int = 64,
                    progress: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Features (and logits) of every image under ``folder``."""
    paths = list_images(folder)
    return extract_features(iter_image_batches(paths, batch_size), extractor, progress,
                            total=(len(paths) + batch_size - 1) // batch_size)


def reference_statistics(reference: str, extractor: Union[FeatureExtractor, nn.Module],
                         batch_size: int = 64, progress: bool = False
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """``reference`` is a ``.npz`` statistics file or a folder of images."""
    if osp.isfile(reference) and reference.endswith('.npz'):
        return load_statistics(reference)
    if osp.isdir(reference):
        feats, _ = folder_features(reference, extractor, batch_size, progress)
        return feature_statistics(feats)
    raise FileNotFoundError(
        f'reference {reference!r} is neither an image folder nor a .npz statistics file. '
        'Prepare the 256x256 ImageNet-val reference with '
        'tools/dataset_converters/prepare_imagenet_val256.py.')


def compute_fid_is(generated: Union[str, Tuple[Tensor, Optional[Tensor]]],
                   reference: Optional[str],
                   extractor: Union[FeatureExtractor, nn.Module],
                   batch_size: int = 64,
                   compute_is: bool = True,
                   isc_splits: int = 10,
                   progress: bool = False) -> dict:
    """FID (against ``reference``) and IS of ``generated``.

    Args:
        generated (str | tuple): An image folder, or precomputed
            ``(features, logits)``.
        reference (str, optional): A folder or an ``.npz``; None skips FID.
        extractor (FeatureExtractor | nn.Module): The feature network.
        batch_size (int): Images per forward. Defaults to 64.
        compute_is (bool): Also compute IS (needs logits). Defaults to True.
        isc_splits (int): IS splits. Defaults to 10.
        progress (bool): Show tqdm bars. Defaults to False.

    Returns:
        dict: ``fid``, ``is_mean``, ``is_std`` (those computed) and ``num_images``.
    """
    extractor = _as_extractor(extractor)
    if isinstance(generated, str):
        feats, logits = folder_features(generated, extractor, batch_size, progress)
    else:
        feats, logits = generated
    out = {'num_images': int(feats.shape[0])}
    if reference is not None:
        mu_r, sigma_r = reference_statistics(reference, extractor, batch_size, progress)
        mu_g, sigma_g = feature_statistics(feats)
        out['fid'] = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    if compute_is:
        if logits is None:
            raise ValueError('IS needs class logits but the feature network returned only features; '
                             'use the Inception network or disable IS')
        out['is_mean'], out['is_std'] = inception_score(logits, splits=min(isc_splits, feats.shape[0]))
    return out


# ---------------------------------------------------------------------------
# mmengine metric
# ---------------------------------------------------------------------------
@METRICS.register_module()
class ADDPGenerationMetric(BaseMetric):
    """FID / IS of the images generated in a test loop.

    The model's ``predict`` (ADDP with an ``AlternatingDenoisingSampler``)
    returns data samples with a uint8 ``gen_img`` ``[3, H, W]``. Features
    are extracted batch by batch (only features are kept), then FID is
    computed against ``reference`` and IS from the Inception logits.

    Args:
        inception_weights (str, optional): Path of torch-fidelity's
            Inception-v3 weights file. Required unless ``feature_extractor``
            is given.
        reference (str, optional): Reference image folder (e.g. the 256²
            ImageNet val PNGs) or ``.npz`` statistics. None computes IS only.
        compute_is (bool): Also report IS. Defaults to True.
        isc_splits (int): IS splits (capped at the sample count). Defaults to 10.
        batch_size (int): Batch size for reference-folder features. Defaults to 64.
        save_dir (str, optional): Also write every generated image there as
            ``{sample_idx:06d}.png``. Defaults to None.
        feature_extractor (nn.Module | dict, optional): A feature network
            instead of Inception (a module, or a config built from
            mmpretrain ``MODELS``). Defaults to None.
        device (str, optional): Device of the feature network; defaults to
            the current CUDA device when available, else the CPU.
        collect_device (str): Defaults to ``'cpu'``.
        prefix (str, optional): Defaults to ``'gen'``.
    """
    default_prefix = 'gen'

    def __init__(self,
                 inception_weights: Optional[str] = None,
                 reference: Optional[str] = None,
                 compute_is: bool = True,
                 isc_splits: int = 10,
                 batch_size: int = 64,
                 save_dir: Optional[str] = None,
                 feature_extractor: Optional[Union[nn.Module, dict]] = None,
                 device: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if feature_extractor is None and (not inception_weights or not osp.isfile(inception_weights)):
            raise FileNotFoundError(
                f'Inception-v3 weights file not found: {inception_weights!r} (set '
                f'`inception_weights` in the generation config). {INCEPTION_WEIGHTS_HELP}')
        if reference is not None and not (osp.isdir(reference) or osp.isfile(reference)):
            raise FileNotFoundError(
                f'FID reference {reference!r} does not exist; pass an image folder or a .npz '
                'made by tools/fid.py --save-stats (or reference=None for IS only)')
        self.inception_weights = inception_weights
        self.reference = reference
        self.compute_is = compute_is
        self.isc_splits = isc_splits
        self.batch_size = batch_size
        self.save_dir = save_dir
        self.device = device
        self._network_cfg = feature_extractor
        self._extractor: Optional[FeatureExtractor] = None

    def _get_extractor(self, device) -> FeatureExtractor:
        if self._extractor is None:
            # generated images arrive on the CPU; run the network on the GPU when there is one
            device = self.device or ('cuda' if torch.cuda.is_available() else device)
            net = self._network_cfg
            if net is None:
                net = build_inception(self.inception_weights, device)
            elif isinstance(net, dict):
                from mmpretrain.registry import MODELS
                net = MODELS.build(net)
            self._extractor = FeatureExtractor(net.to(device), device)
        return self._extractor

    def process(self, data_batch, data_samples: Sequence) -> None:
        imgs, idxs = [], []
        for i, sample in enumerate(data_samples):
            img = sample.get('gen_img') if hasattr(sample, 'get') else sample['gen_img']
            if img is None:
                raise KeyError('data sample has no `gen_img`; the model must be ADDP with a '
                               '`sampler` (AlternatingDenoisingSampler) in a generation config')
            imgs.append(images_to_uint8(img))
            meta = sample.metainfo if hasattr(sample, 'metainfo') else sample
            idxs.append(int(meta.get('sample_idx', len(self.results) * len(data_samples) + i)))
        batch = torch.stack(imgs)
        if self.save_dir:
            from PIL import Image
            os.makedirs(self.save_dir, exist_ok=True)
            for idx, img in zip(idxs, batch):
                Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(
                    osp.join(self.save_dir, f'{idx:06d}.png'))
        feats, logits = self._get_extractor(batch.device)(batch)
        self.results.append((feats, logits))

    def compute_metrics(self, results: list) -> dict:
        feats = torch.cat([r[0] for r in results])
        logits = [r[1] for r in results if r[1] is not None]
        logits = torch.cat(logits) if logits else None
        metrics = {}
        if self.reference is not None:
            mu_r, sigma_r = reference_statistics(self.reference, self._get_extractor('cpu'),
                                                 self.batch_size)
            mu_g, sigma_g = feature_statistics(feats)
            metrics['fid'] = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
        if self.compute_is:
            if logits is None:
                raise ValueError('IS needs logits; the feature network returned features only')
            metrics['is_mean'], metrics['is_std'] = inception_score(
                logits, splits=min(self.isc_splits, logits.shape[0]))
        metrics['num_images'] = int(feats.shape[0])
        return metrics
