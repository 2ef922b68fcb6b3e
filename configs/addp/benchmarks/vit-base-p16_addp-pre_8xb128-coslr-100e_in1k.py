# 224x224 variant of the ViT-B fine-tuning recipe (ADDP itself fine-tunes at 256; this is
# for comparison with 224-px methods). The 16x16 pretraining pos-embed is resized
# bicubically to 14x14 on load. Train: RandomResizedCrop 224; eval: Resize 256 +
# CenterCrop 224 (crop_pct 0.875, what the reference main_finetune.py does at <= 224).
# Run first: put ImageNet under data/imagenet/ and the ADDP-B release at checkpoints/addp-vit-base-16.pth (README: External checkpoints)
_base_ = ['./vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py']

img_size = 224
model = dict(backbone=dict(img_size=img_size))

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
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
