# Tiny CPU config used by the tests (and handy for smoke runs): a 2-block,
# 32-wide ADDPViTDetBackbone (window 2, one global block) + ADDPSimpleFPN + a slim
# Mask R-CNN on 128 px images of a tiny COCO-format dataset. Not a recipe.
# Run first: nothing writes data/tiny_coco/: the tests generate it (write_tiny_coco in tests/helpers/detection.py) and pass --cfg-options *.dataset.data_root=...; for a standalone run use configs/demo/mask-rcnn_addp-vit-tiny-p4_simple-fpn_1xb4-150i_synthetic-coco-128px.py
_base_ = ['../addp_det/_base_/mask-rcnn_addp-vit-tiny_simple-fpn_128px.py']

data_root = 'data/tiny_coco/'  # tests override this with --cfg-options
classes = ('box', 'disk')

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.),
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
        mask_head=dict(in_channels=16, conv_out_channels=16, num_classes=len(classes))))

optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_iters = 4
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
train_cfg = dict(max_iters=max_iters, val_interval=1000)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=1)
