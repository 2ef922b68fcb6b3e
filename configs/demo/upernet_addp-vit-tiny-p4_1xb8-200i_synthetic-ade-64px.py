# Stage 6b of the embedded demo (tools/demo.py): a short UperNet run with the
# demo's ADDP encoder (stage 3) on a small ADE20k-format dataset generated from
# real textures (addp_mm/datasets/synthetic_dense.py: grass/gravel/brick regions
# split by a random boundary, coins and horses pasted with their real masks;
# classes grass, gravel, brick, coin, horse). Trains on all 64 training scenes,
# reports mIoU on the 16 validation scenes.
#
# It is the ViT-B recipe (configs/addp_seg/upernet_addp-vit-base-p16_8xb2-amp-160k_ade20k-512x512.py)
# shrunk to the demo encoder (patch 4, 64 wide, 4 blocks -> a 16x16 map, rescaled
# x2, x1, x0.5, x0.25), 64x64 scenes, whole-image inference, fp32 and plain BN
# (one process on a CPU). Scaling up = that config (`pretrained` = your ADDP
# checkpoint, `data_root` = ADE20k).
# Run first: python tools/demo.py (it writes the data under work_dirs/demo/data/ and the stage-3 encoder work_dirs/demo/addp/iter_1500.pth; --data-only writes just the data)
_base_ = ['../addp_seg/upernet_addp-vit-base-p16_8xb2-amp-160k_ade20k-512x512.py']

# ---------------------------------------------------------------- user paths
pretrained = 'work_dirs/demo/addp/iter_1500.pth'  # an ADDP pretraining checkpoint
data_root = 'work_dirs/demo/data/synthetic_ade_64px/'  # tools/demo.py writes it
# --------------------------------------------------------------------------

classes = ('grass', 'gravel', 'brick', 'coin', 'horse')
palette = [[4, 200, 3], [120, 120, 120], [180, 60, 40], [255, 200, 0], [150, 5, 61]]
crop_size = (64, 64)
embed_dims = 64
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, num_layers=4, num_heads=4,
                  feedforward_channels=4 * embed_dims),
        img_size=crop_size,
        patch_size=4,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(embed_dim=embed_dims, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=32, pool_scales=(1, 2),
                     num_classes=len(classes), norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dims, channels=16, num_classes=len(classes),
                        norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

# ADE20k layout with its own classes (mmseg's ADE20KDataset only takes subsets
# of the 150 ADE classes); every scene is used: no `indices`
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True,
    metainfo=dict(classes=classes, palette=palette))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, **dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, **dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

# fp32 OptimWrapper (one CPU process), the recipe's AdamW + layer decay
max_iters = 200
optim_wrapper = dict(type='OptimWrapper', _delete_=True,
                     optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999),
                                    weight_decay=0.05),
                     constructor='ADDPLayerDecayOptimWrapperConstructor',
                     paramwise_cfg=dict(
                         layer_decay_rate=0.65,
                         flat_decay_mult=0.0,
                         custom_keys={'pos_embed': dict(decay_mult=0.0),
                                      'cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=max_iters,
                                                              max_keep_ckpts=1))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
