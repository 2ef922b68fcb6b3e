from .transformer import (Attention, Block, DropPath, Mlp, MlmLayer, PatchEmbed,
                          init_linear_layernorm, set_sdpa, to_2tuple)

__all__ = ['Attention', 'Block', 'DropPath', 'Mlp', 'MlmLayer', 'PatchEmbed', 'set_sdpa',
           'to_2tuple', 'init_linear_layernorm']
from .window_attention import ADDPRelPosAttention, ADDPWindowBlock, decomposed_rel_pos_bias

__all__ += ['ADDPRelPosAttention', 'ADDPWindowBlock', 'decomposed_rel_pos_bias']
