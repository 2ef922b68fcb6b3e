# ADDP ViT-L/16 pretraining, official recipe (reference
# ``configs/release/large/pretrain_*.sh``): as ViT-B but with a
# 1024-wide, 24-block encoder, a 1024-wide decoder (8 blocks, 16 heads), the
# MAGE ViT-L predictor (checkpoints/mage-vitl-1600.pth, from the MAGE README,
# github.com/LTH14/mage), and 800 epochs.
# Run first: download vqgan_jax_strongaug.ckpt and mage-vitl-1600.pth into checkpoints/ and put ImageNet under data/imagenet/ (docs/checkpoints.md: External checkpoints)
_base_ = [
    '../_base_/models/addp_vit-large-p16.py',
    '../_base_/datasets/imagenet_bs128_addp-256px.py',
    '../_base_/schedules/adamw-amp_coslr-1600e_bs4096_addp.py',
    '../_base_/default_runtime.py',
]

# the release's frozen-predictor dropout and the default fast path, as in the ViT-B config
model = dict(token_predictor=dict(train_dropout=True), performance='auto')

max_epochs = 800
warmup_epochs = 40
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0., by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

custom_hooks = [dict(type='ADDPVisualizationHook', interval=5000, num_images=4)]
