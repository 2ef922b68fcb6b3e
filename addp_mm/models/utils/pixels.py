"""Pixel conventions shared by the ADDP algorithms.

The frozen VQGAN reads and writes RGB in [0, 1]; the ADDP encoder (and the
perceptual loss) normalise with the ImageNet statistics below.
"""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_rgb_preprocessor() -> dict:
    """A fresh ``SelfSupDataPreprocessor`` config giving RGB in [0, 1]
    (mean 0, std 255, BGR->RGB): the default of the algorithms that feed the
    VQGAN tokenizer."""
    return dict(type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.],
                to_rgb=True)
