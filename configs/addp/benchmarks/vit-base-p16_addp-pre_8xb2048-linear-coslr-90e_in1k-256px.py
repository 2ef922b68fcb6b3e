# Linear probing of a frozen ADDP ViT-B/16 encoder on ImageNet-1k, MAE protocol
# (He et al. 2022, `main_linprobe.py`; ADDP released no linear-probe code):
#   * frozen encoder; features -> BatchNorm1d(affine=False, eps=1e-6) -> Linear
#     (weight trunc-normal std 0.01, bias 0);
#   * LARS, momentum 0.9, weight decay 0, lr = blr 0.1 x 16384/256 = 6.4 at total batch
#     16384 (8 GPUs x 2048), 1-D params (the bias) excluded from the LARS trust ratio;
#   * 90 epochs: 10 warmup epochs (linear, per iteration), then half-cosine to 0;
#   * RandomResizedCrop + horizontal flip only (no RandAugment/Mixup/label smoothing), CE loss.
# Our choices, since ADDP's own protocol is not released:
#   * 256x256 input (ADDP's pretraining size), eval Resize 256 + CenterCrop 256 as its fine-tuning;
#   * features = mean of the patch tokens after the pretraining encoder *as pretrained*
#     (tokenizer_norm and final norm kept: the frozen blocks see the pretraining input
#     distribution). ADDP's decoder never reads the encoder's cls output, hence avg pooling
#     instead of MAE's default cls token.
# Run first: put ImageNet under data/imagenet/ and the ADDP-B release at checkpoints/addp-vit-base-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../../_base_/datasets/imagenet_bs128_addp-finetune-256px.py',  # paths, eval pipeline
]
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# User path (ImageNet's paths and layouts: _base_/datasets/imagenet_bs128_addp-finetune-256px.py)
pretrained_ckpt = 'checkpoints/addp-vit-base-16.pth'

img_size = 256
num_classes = 1000
embed_dims = 768
num_layers = 12

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPVisionTransformer',
        arch='b',
        img_size=img_size,
        patch_size=16,
        frozen_stages=num_layers,  # everything frozen (and kept in eval mode)
        use_tokenizer_norm=True,
        final_norm=True,
        out_type='featmap',  # normed patch tokens [B, C, H, W]; pooled by the neck
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_ckpt, prefix='backbone.')),
    neck=[
        dict(type='GlobalAveragePooling'),
        dict(type='ClsBatchNormNeck', input_features=embed_dims, affine=False, eps=1e-6),
    ],
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=embed_dims,
        loss=dict(type='CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]))

# MAE's linear-probe augmentation only: no RandAugment / random erasing
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=2048, drop_last=True, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=256)
test_dataloader = val_dataloader

base_lr = 6.4  # blr 0.1 x 16384 / 256
max_epochs = 90
warmup_epochs = 10
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='LARS', lr=base_lr, weight_decay=0.0, momentum=0.9, eta=0.001),
    # MAE's LARS skips the trust ratio (and weight decay) for 1-D params
    paramwise_cfg=dict(custom_keys={'.bias': dict(decay_mult=0.0, lars_exclude=True)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, eta_min=0.0, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=16384)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    logger=dict(type='LoggerHook', interval=10))
randomness = dict(seed=0, diff_rank_seed=True)
