from . import (backbones, generation, heads, layers, losses, necks, selfsup,  # noqa: F401
               target_generators, tokenizers, utils)
