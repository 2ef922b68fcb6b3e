# ImageNet-1k fine-tuning of an ADDP ViT-L/16 encoder at 256x256: the recipe of the
# official `finetune_addp_large_50ep.sh`, reported top-1 85.9.
# Total batch 1024 (8 GPUs x 128); lr 1e-3 = blr 2.5e-4 x 1024/256, layer decay 0.8,
# drop path 0.2, 5 warmup epochs; everything else as the ViT-B config it inherits.
# Run first: put ImageNet under data/imagenet/ and the ADDP-L release at checkpoints/addp-vit-large-16.pth (README: External checkpoints)
_base_ = ['./vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py']

# ----------------------------------------------------------------------------
# User paths (see the ViT-B config for the accepted checkpoint formats and layouts)
pretrained_ckpt = 'checkpoints/addp-vit-large-16.pth'
data_root = 'data/imagenet/'
train_ann_file = 'meta/train.txt'  # '' for the class-folder layout
val_ann_file = 'meta/val.txt'  # '' for the class-folder layout
# ----------------------------------------------------------------------------

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_ckpt, prefix='backbone.')),
    head=dict(in_channels=1024))

train_dataloader = dict(dataset=dict(data_root=data_root, ann_file=train_ann_file))
val_dataloader = dict(dataset=dict(data_root=data_root, ann_file=val_ann_file))
test_dataloader = dict(dataset=dict(data_root=data_root, ann_file=val_ann_file))

base_lr = 1e-3  # blr 2.5e-4 x 1024 / 256
min_lr = 1e-6
max_epochs = 50
warmup_epochs = 5
optim_wrapper = dict(optimizer=dict(lr=base_lr), paramwise_cfg=dict(layer_decay_rate=0.8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, eta_min_ratio=min_lr / base_lr,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
