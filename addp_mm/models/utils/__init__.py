from .encoder_weights import load_addp_encoder_state_dict, timm_vit_to_mmpretrain

__all__ = ['load_addp_encoder_state_dict', 'timm_vit_to_mmpretrain']
