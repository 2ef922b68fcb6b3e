# ADDP ViT-L/16 pretraining, official recipe (reference
# ``configs/release/large/pretrain_*.sh``): as ViT-B but with a
# 1024-wide, 24-block encoder, a 1024-wide decoder (8 blocks, 16 heads), the
# MAGE ViT-L predictor, and 800 epochs.
# Run first: download vqgan_jax_strongaug.ckpt and mage-vitl-1600.pth into checkpoints/ and put ImageNet under data/imagenet/ (README: External checkpoints)
_base_ = ['./addp_vit-base-p16_32xb128-amp-coslr-1600e_in1k-256px.py']

# ---------------------------------------------------------------- user paths
# mage-vitl-1600.pth: MAGE ViT-L token predictor (MAGE README, github.com/LTH14/mage)
predictor_checkpoint = 'checkpoints/mage-vitl-1600.pth'

model = dict(
    backbone=dict(embed_dims=1024, num_layers=24, num_heads=16),
    neck=dict(in_channels=1024, embed_dims=1024, num_layers=8, num_heads=16),
    token_predictor=dict(
        embed_dims=1024, depth=24, num_heads=16, decoder_embed_dims=1024, decoder_depth=8,
        decoder_num_heads=16, checkpoint=predictor_checkpoint),
)

max_epochs = 800
warmup_epochs = 40
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0., by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
