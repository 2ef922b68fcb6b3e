from . import backbones, generation, heads, layers, necks, selfsup, tokenizers, utils  # noqa: F401
