# ADDP ViT-L/16: ADDP-B (./addp_vit-base-p16.py) with a 24-block, 1024-wide
# encoder (16 heads) and a 1024-wide decoder (8 blocks, 16 heads), trained
# against the frozen MAGE ViT-L token predictor (ADDP-L's teacher, from
# ./mage_vit-large-p16.py) and the same VQGAN tokenizer.
_base_ = ['./vqgan_f16_1024.py', './mage_vit-large-p16.py']

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

model = dict(
    type='ADDP',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True,
        non_blocking=True),
    backbone=dict(
        type='ADDPPretrainEncoder', img_size=256, patch_size=16, embed_dims=1024, num_layers=24,
        num_heads=16, mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, tokenizer_drop_rate=0.1),
    neck=dict(
        type='ADDPDecoder', in_channels=1024, embed_dims=1024, num_layers=8, num_heads=16,
        mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1, num_classes=1000),
    head=dict(type='ADDPLossHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    tokenizer=_base_.tokenizer,
    token_predictor=_base_.token_predictor,
    mask_generator=dict(
        type='ADDPNestedMaskGenerator', ratio_min=0.5, ratio_max=1.0, ratio_mu=0.55, ratio_std=0.25,
        num_grid=100, max_offset=5),
)
