"""Image helpers of the generation APIs: fitting inputs to the model size,
PNG writing, sample grids and per-step strips."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ImageLike = Union[str, np.ndarray, Tensor, 'PIL.Image.Image']  # noqa: F821

__all__ = ['fit_image', 'fit_mask', 'read_image_file', 'to_pil', 'save_png', 'make_grid',
           'step_strip']


def _resize_crop_box(w: int, h: int, size: int) -> Tuple[Tuple[int, int], Tuple[int, int, int, int]]:
    """Shorter side to ``size``, then the centred ``size x size`` crop."""
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (rw - size) // 2, (rh - size) // 2
    return (rw, rh), (left, top, left + size, top + size)


def read_image_file(path: str):
    """Read an image file as an RGB PIL image.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: One line if the file is not an image PIL can decode
            (another file type, or a truncated image).
    """
    from PIL import Image, UnidentifiedImageError
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path!r}')
    try:
        with Image.open(path) as im:
            return im.convert('RGB')
    except UnidentifiedImageError:
        raise ValueError(f'{path!r} is not an image file PIL can read; give a PNG, JPEG or '
                         'another image format') from None
    except (OSError, SyntaxError) as err:  # truncated or corrupt image data
        raise ValueError(f'image {path!r} cannot be decoded ({str(err).splitlines()[0]}); '
                         'give an intact image file') from None


def to_pil(image: ImageLike):
    """A path, a PIL image, an ``[H, W, 3]`` uint8 RGB array or a ``[3, H, W]``
    float tensor in ``[0, 1]`` -> an RGB PIL image."""
    from PIL import Image
    if isinstance(image, str):
        return read_image_file(image)
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f'an image tensor must be [3, H, W] in [0, 1], got {tuple(image.shape)}')
        image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f'an image array must be [H, W, 3] RGB, got {image.shape}')
        if image.dtype != np.uint8:
            raise ValueError(f'an image array must be uint8 RGB, got {image.dtype}')
        return Image.fromarray(image[..., :3])
    raise TypeError(f'cannot read an image from {type(image).__name__}; give a path, a PIL image, '
                    'an [H, W, 3] uint8 array or a [3, H, W] tensor in [0, 1]')


def fit_image(image: ImageLike, size: int) -> Tensor:
    """Resize the shorter side to ``size`` (bicubic), centre-crop to a square.

    Returns:
        Tensor: ``[3, size, size]`` float in ``[0, 1]``.
    """
    from PIL import Image
    im = to_pil(image)
    new_size, box = _resize_crop_box(*im.size, size)
    im = im.resize(new_size, Image.BICUBIC).crop(box)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.


def fit_mask(mask: Union[np.ndarray, Tensor, 'PIL.Image.Image'],  # noqa: F821
             image_hw: Tuple[int, int], size: int, grid_hw: Tuple[int, int]) -> Tensor:
    """Bring a region mask (non-zero = regenerate) to the model's frame.

    Accepted: a mask of the original image's size (it is resized and cropped
    exactly as the image), a ``size x size`` pixel mask, or a token-grid mask.
    An RGB(A) mask counts a pixel as inside when any channel is non-zero.

    Returns:
        Tensor: Float ``[1, size, size]`` pixel mask or ``[h, w]`` token mask.
    """
    from PIL import Image
    if isinstance(mask, Image.Image):
        mask = np.array(mask)
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).detach().cpu()
    if mask.ndim == 3:  # HWC (a drawn layer) or 1HW
        mask = mask.ne(0).any(dim=0 if mask.shape[0] == 1 else -1)
    if mask.ndim != 2:
        raise ValueError(f'a region mask must be [H, W], got {tuple(mask.shape)}')
    mask = mask.ne(0)
    hw = tuple(mask.shape)
    if hw == tuple(grid_hw):
        return mask.float()
    if hw == (size, size):
        return mask.float()[None]
    if hw == tuple(image_hw):
        new_size, box = _resize_crop_box(image_hw[1], image_hw[0], size)
        im = Image.fromarray(mask.numpy().astype(np.uint8) * 255)
        im = im.resize(new_size, Image.NEAREST).crop(box)
        return torch.from_numpy(np.array(im) > 0).float()[None]
    raise ValueError(f'region mask of shape {hw} fits neither the image ({tuple(image_hw)}), the '
                     f'model input ({size}, {size}) nor the token grid {tuple(grid_hw)}')


def save_png(img_u8: Tensor, path: str) -> None:
    """uint8 ``[3, H, W]`` RGB -> PNG, written atomically (temporary file, then rename)."""
    from PIL import Image
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        Image.fromarray(img_u8.permute(1, 2, 0).cpu().numpy()).save(tmp, format='PNG')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def make_grid(imgs: Tensor, nrow: int, pad: int = 2) -> Tensor:
    """uint8 ``[B, 3, H, W]`` -> one uint8 ``[3, H', W']`` grid, ``nrow`` images a row."""
    B, C, H, W = imgs.shape
    ncol = min(nrow, B)
    nrows = (B + ncol - 1) // ncol
    grid = imgs.new_zeros(C, nrows * (H + pad) + pad, ncol * (W + pad) + pad)
    for i in range(B):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + H, left:left + W] = imgs[i]
    return grid


def step_strip(trajectory: List, index: int, grid_hw: Sequence[int], size: Sequence[int]) -> Tensor:
    """Per-step strip of one sample: ``x_t`` above (grey where the decode was
    skipped because every token was masked), the mask (white = masked) below.

    Args:
        trajectory (list): ``(x or None, mask)`` per step, as the sampler returns it.
        index (int): The sample in the batch.
        grid_hw (Sequence[int]): Token grid ``(h, w)``.
        size (Sequence[int]): Image ``(H, W)``.

    Returns:
        Tensor: uint8 ``[3, H', W']``.
    """
    from addp_mm.utils.pixels import images_to_uint8
    H, W = size
    tiles_x, tiles_m = [], []
    for x, mask in trajectory:
        grey = torch.full((3, H, W), 128, dtype=torch.uint8)
        tiles_x.append(grey if x is None else images_to_uint8(x[index]))
        m = mask[index].reshape(1, 1, *grid_hw).float()
        m = torch.nn.functional.interpolate(m, size=(H, W), mode='nearest')[0]
        tiles_m.append((m * 255).to(torch.uint8).expand(3, H, W))
    return make_grid(torch.stack(tiles_x + tiles_m), nrow=len(trajectory))


def grid_of(images: Sequence[Tensor], nrow: Optional[int] = None) -> Tensor:
    """A square-ish grid (``ceil(sqrt(n))`` a row) of uint8 ``[3, H, W]`` images."""
    nrow = nrow or int(np.ceil(np.sqrt(len(images))))
    return make_grid(torch.stack(list(images)), nrow=nrow)
