# A tiny mmpretrain image classifier on the embedded photo dataset (crops of
# scikit-image's bundled photos, labelled by photo). It trains in seconds on a
# CPU and is what the foundation tests and smoke checks of tools/train.py and
# tools/test.py run. Nothing is downloaded.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

data_root = 'data/embedded_photos'  # generated on first use from skimage/data
crop_size = 32
num_classes = 14

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
        img_size=crop_size,
        patch_size=8,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=None),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=32,
        loss=dict(type='CrossEntropyLoss'),
        topk=(1, 5)))

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=crop_size, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
# 'mmpretrain.' names: mmpretrain's inferencers build this pipeline in the current
# default scope, which an mmdet or mmseg inferencer may have left set
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmpretrain.ResizeEdge', scale=crop_size, edge='short'),
    dict(type='mmpretrain.CenterCrop', crop_size=crop_size),
    dict(type='mmpretrain.PackInputs'),
]
dataset = dict(type='ADDPEmbeddedPhotos', data_root=data_root, crop_size=64)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(**dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, split='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=20, by_epoch=False, eta_min=1e-5)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20, val_interval=20)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
