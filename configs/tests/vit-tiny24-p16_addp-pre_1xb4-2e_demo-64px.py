# A tiny version of the ADDP fine-tuning recipe for tests and CPU demos: the same
# components as vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py (ADDPVisionTransformer
# in reference mode, RandAugment, RandomErasing, Mixup/CutMix, label smoothing, layer decay,
# warmup + cosine) with a 24-wide 2-block encoder (the size of the official-format tiny
# fixture), 64x64 inputs and an ImageNet-format folder of a few images.
#
#   python tools/train.py configs/tests/vit-tiny24-p16_addp-pre_1xb4-2e_demo-64px.py \
#       --work-dir work_dirs/demo --cfg-options model.backbone.init_cfg.checkpoint=TINY_ADDP.pth
# Run first: put a few images in class folders under data/tiny_imagenet_format/{train,val}/<class>/ (nothing generates them) and set both ann files to ''
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ----------------------------------------------------------------------------
# User paths
# A tiny ADDP checkpoint with a 24-wide, 2-block encoder (any format the backbone reads);
# None fine-tunes from random initialisation.
pretrained_ckpt = None
# An ImageNet-format folder: `<data_root>/{train,val}/<class>/*.png`, optionally with
# `<data_root>/meta/{train,val}.txt` meta lists ("<path relative to train/ or val/> <label>").
# Set the ann files to '' to read the class folders instead of the meta lists.
data_root = 'data/tiny_imagenet_format/'
train_ann_file = 'meta/train.txt'
val_ann_file = 'meta/val.txt'
num_classes = 4
dataset_type = 'CustomDataset'  # the real configs use 'ImageNet' (1000 classes)
# ----------------------------------------------------------------------------

img_size = 64
embed_dims = 24

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPVisionTransformer',
        arch=dict(embed_dims=embed_dims, num_layers=2, num_heads=4,
                  feedforward_channels=4 * embed_dims),
        img_size=img_size,
        patch_size=16,
        drop_path_rate=0.1,
        use_tokenizer_norm=False,
        final_norm=False,
        out_type='avg_featmap',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained_ckpt, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=embed_dims,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)],
        topk=(1, )),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
# 'mmpretrain.' names: mmpretrain's inferencers build this pipeline in the current
# default scope, which an mmdet or mmseg inferencer may have left set
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmpretrain.ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=img_size),
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        ann_file=train_ann_file,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val',
        ann_file=val_ann_file,
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

base_lr = 4e-3
max_epochs = 2
warmup_epochs = 1
optim_wrapper = dict(
    type='OptimWrapper',  # the full configs use AmpOptimWrapper (GPU only)
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, betas=(0.9, 0.999)),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, eta_min_ratio=1e-6 / base_lr,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs))
randomness = dict(seed=0)
