# ImageNet-1k for the ADDP fine-tuning recipe at 256x256: timm's RandAugment and
# random erasing for training, Resize 256 + CenterCrop 256 for evaluation; 128 images
# per GPU.

# ----------------------------------------------------------------------------
# User paths. ImageNet-1k in one of two layouts:
#  * meta-list (default): `<data_root>/meta/{train,val}.txt`, one "<relative path> <label>"
#    line per image, the paths relative to `<data_root>/{train,val}/`;
#  * class folders: `<data_root>/train/<class>/*.JPEG` and `<data_root>/val/<class>/*.JPEG`
#    (1000 folders each, labels by sorted folder name): set both ann files to ''.
data_root = 'data/imagenet/'
train_ann_file = 'meta/train.txt'
val_ann_file = 'meta/val.txt'
dataset_type = 'ImageNet'
# ----------------------------------------------------------------------------

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],  # ImageNet mean/std (RGB, 0-255)
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

# timm create_transform(is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
# interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),  # rounded bgr_mean
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',  # per-pixel normal noise = timm's 'pixel' mode
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
# Eval at 256: Resize(256, bicubic) + CenterCrop(256), i.e. crop_pct 1.0.
# 'mmpretrain.' names: mmpretrain's inferencers build this pipeline in the current
# default scope, which an mmdet or mmseg inferencer may have left set
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=256),
    dict(type='mmpretrain.PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        ann_file=train_ann_file,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val',
        ann_file=val_ann_file,
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
