from .transformer import Attention, Block, DropPath, Mlp, MlmLayer, set_sdpa

__all__ = ['Attention', 'Block', 'DropPath', 'Mlp', 'MlmLayer', 'set_sdpa']
