# Tiny CPU config used by the tests (and handy for smoke runs): a 2-block,
# 32-wide ADDPViTDet (window 2, one global block) + ADDPSimpleFPN + a slim
# Mask R-CNN on 128 px images of a tiny COCO-format dataset. Not a recipe.
# Run first: nothing writes data/tiny_coco/: the tests generate it (write_tiny_coco in tests/helpers/detection.py) and pass --cfg-options *.dataset.data_root=...; for a standalone run use configs/demo/mask-rcnn_addp-vit-tiny-p4_simple-fpn_1xb4-150i_synthetic-coco-128px.py
_base_ = ['../addp_det/mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-100e_coco.py']

data_root = 'data/tiny_coco/'  # tests override this with --cfg-options
classes = ('box', 'disk')
image_size = (128, 128)
norm_cfg = dict(type='LN2d', requires_grad=True)  # mmpretrain's LayerNorm2d

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.),
        img_size=image_size,
        pretrain_img_size=64,
        window_size=2,
        global_attn_indexes=(1,),
        drop_path_rate=0.1,
        pretrained=None),
    neck=dict(backbone_channel=32, in_channels=[8, 16, 32, 32], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, conv_out_channels=16, fc_out_channels=32,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(in_channels=16, conv_out_channels=16, num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=50),
        rcnn=dict(score_thr=0.0, max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
max_iters = 4
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
train_cfg = dict(max_iters=max_iters, val_interval=1000, dynamic_intervals=None)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook'))
log_processor = dict(window_size=1)
randomness = dict(seed=0)
