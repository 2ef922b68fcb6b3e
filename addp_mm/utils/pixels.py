"""Pixel conventions shared by the ADDP algorithms, the sampler and the metrics.

The frozen VQGAN reads and writes RGB in [0, 1]; the ADDP encoder (and the
perceptual loss) normalise with the ImageNet statistics below; generated
images are saved and measured as uint8 (:func:`images_to_uint8`).
"""
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_rgb_preprocessor() -> dict:
    """A fresh ``SelfSupDataPreprocessor`` config giving RGB in [0, 1]
    (mean 0, std 255, BGR->RGB): the default of the algorithms that feed the
    VQGAN tokenizer."""
    return dict(type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.],
                to_rgb=True)


def images_to_uint8(images: Tensor) -> Tensor:
    """``[.., 3, H, W]`` float images in nominal ``[0, 1]`` -> uint8, as the reference saves them.

    ``clamp(x·255, 0, 255)`` truncated to an integer (numpy ``astype(uint8)``).
    """
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255.).clamp(0, 255).to(torch.uint8)
