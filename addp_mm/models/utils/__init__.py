from .encoder_checkpoint import (EncoderLayout, load_addp_encoder_state_dict,
                                 load_encoder_checkpoint, load_encoder_state_dict,
                                 resolve_pretrained, timm_vit_to_mmpretrain)
from .out_indices import check_out_indices

__all__ = ['EncoderLayout', 'check_out_indices', 'load_addp_encoder_state_dict',
           'load_encoder_checkpoint', 'load_encoder_state_dict', 'resolve_pretrained',
           'timm_vit_to_mmpretrain']
