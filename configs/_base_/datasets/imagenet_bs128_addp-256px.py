# ImageNet-1k train split for ADDP pretraining: random resized crops of 256 px
# (scale 0.2-1, bicubic) and flips, 128 images per GPU, no normalisation here
# (the model's data preprocessor scales to [0, 1]).
#
# Either a class-folder tree
#   <data_root>/<train_prefix>/<wnid>/*.JPEG       (train_ann_file = '')
# or a meta-list file, "relative/path.JPEG class_idx" per line, paths relative
# to <data_root>/<train_prefix> (the official ADDP layout: meta/train.txt):
#   --cfg-options train_dataloader.dataset.ann_file=meta/train.txt
data_root = 'data/imagenet/'
train_prefix = 'train'
train_ann_file = ''

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256, crop_ratio_range=(0.2, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        ann_file=train_ann_file,
        data_prefix=train_prefix,
        pipeline=train_pipeline))
