from . import backbones, generation, layers, necks, selfsup, tokenizers, utils  # noqa: F401
