# Stage 5 of the embedded demo (tools/demo.py): transfer. A linear probe of the
# frozen ADDP encoder (stage 3) on a real labelled task built from the embedded
# photos: "which of the 14 photos does this 32 px crop come from" (crops of the
# val split never seen in training). The random-init baseline is
# vit-tiny-p4_random-init_linear-probe_1xb64-150i_embedded-32px.py (same encoder,
# same probe, no pretrained weights).
#
# Protocol (MAE-style, as configs/addp/benchmarks/vit-base-p16_addp-pre_8xb2048-linear-*.py):
# frozen encoder as pretrained (tokenizer_norm and final norm kept), mean of the
# patch tokens -> BatchNorm1d(affine=False) -> Linear. Scaling up = that config
# (ImageNet `data_root`, ViT-B/16, `pretrained_ckpt` = your ADDP checkpoint).
# Run first: python tools/demo.py (stage 3 writes the ADDP encoder work_dirs/demo/addp/iter_1500.pth)
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ---------------------------------------------------------------- user paths
pretrained_ckpt = 'work_dirs/demo/addp/iter_1500.pth'  # an ADDP pretraining checkpoint
data_root = 'data/embedded_photos_32px'
# --------------------------------------------------------------------------

img_size = 32
num_classes = 14
embed_dims = 64
num_layers = 4

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPVisionTransformer',
        arch=dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=4,
                  feedforward_channels=4 * embed_dims),
        img_size=img_size,
        patch_size=4,
        frozen_stages=num_layers,
        use_tokenizer_norm=True,
        final_norm=True,
        out_type='featmap',
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
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)],
        topk=(1, 5)))

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
# 'mmpretrain.' names: mmpretrain's inferencers build this pipeline in the current
# default scope, which an mmdet or mmseg inferencer may have left set
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='mmpretrain.PackInputs')]
dataset = dict(type='ADDPEmbeddedPhotos', data_root=data_root, crop_size=img_size, num_train=64,
               num_val=16)
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='InfiniteSampler', shuffle=True),  # no 2 s pause per epoch
    dataset=dict(**dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=112,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, split='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_iters = 150
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters - 20, eta_min=0., by_epoch=False, begin=20,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False, max_keep_ckpts=1))
visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
