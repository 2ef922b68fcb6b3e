# ADDP ViT-B/16 (paper Sec. 3; reference ``models_addp.py``): a 12-block,
# 768-wide encoder and an 8-block, 768-wide decoder on 256 px images, one patch
# per VQGAN token (16 x 16 tokens). The frozen VQGAN tokenizer and the frozen
# MAGE ViT-B token predictor (ADDP-B's teacher) come from the two bases, with
# their sizes and checkpoint paths (`model.tokenizer.checkpoint`,
# `model.token_predictor.checkpoint`).
_base_ = ['./vqgan_f16_1024.py', './mage_vit-base-p16.py']

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

model = dict(
    type='ADDP',
    # the VQGAN sees raw RGB in [0, 1]; the encoder's ImageNet normalisation
    # happens inside the model (after clamping x_t)
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True,
        non_blocking=True),
    backbone=dict(
        type='ADDPPretrainEncoder', img_size=256, patch_size=16, embed_dims=768, num_layers=12,
        num_heads=12, mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, tokenizer_drop_rate=0.1),
    neck=dict(
        type='ADDPDecoder', in_channels=768, embed_dims=768, num_layers=8, num_heads=16,
        mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, num_classes=1000),
    head=dict(type='ADDPLossHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    tokenizer=_base_.tokenizer,
    token_predictor=_base_.token_predictor,
    mask_generator=dict(
        type='ADDPNestedMaskGenerator', ratio_min=0.5, ratio_max=1.0, ratio_mu=0.55, ratio_std=0.25,
        num_grid=100, max_offset=5),
)
