# Stage 6a of the embedded demo (tools/demo.py): a short Mask R-CNN run with the
# demo's ADDP encoder (stage 3) as a ViTDet-style backbone on a small COCO-format
# dataset generated from real textures (addp_mm/datasets/synthetic_dense.py:
# coins segmented from skimage's coins.png and the horse silhouette pasted on
# grass/gravel/brick crops). Reports COCO bbox/segm AP on its val split.
#
# It builds on the CPU-scale Mask R-CNN shared with the tests
# (configs/addp_det/_base_/mask-rcnn_addp-vit-tiny_simple-fpn_128px.py), with the demo encoder: patch 4 (stride 4, so the simple pyramid uses scales 1 and 0.5
# and max-pools the coarser levels), 64 wide, 4 blocks, windows of 8 tokens, block 3 global.
# Scaling up = configs/addp_det/mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-100e_coco.py
# (`pretrained` = your ADDP checkpoint, `data_root` = COCO).
# Run first: python tools/demo.py (it writes the data under work_dirs/demo/data/ and the stage-3 encoder work_dirs/demo/addp/iter_1500.pth; --data-only writes just the data)
_base_ = ['../addp_det/_base_/mask-rcnn_addp-vit-tiny_simple-fpn_128px.py']

# ---------------------------------------------------------------- user paths
pretrained = 'work_dirs/demo/addp/iter_1500.pth'  # an ADDP pretraining checkpoint
data_root = 'work_dirs/demo/data/synthetic_coco_128px/'  # tools/demo.py writes it
# --------------------------------------------------------------------------

classes = ('coin', 'horse')
image_size = (128, 128)
embed_dims = 64
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, num_layers=4, num_heads=4, mlp_ratio=4.),
        img_size=image_size,
        pretrain_img_size=32,
        patch_size=4,
        window_size=8,
        global_attn_indexes=(3, ),
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(backbone_channel=embed_dims, in_channels=[embed_dims, embed_dims],
              scale_factors=(1., 0.5), out_channels=32, num_outs=5),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, conv_out_channels=32, fc_out_channels=64,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=len(classes))),
    test_cfg=dict(rcnn=dict(score_thr=0.05, max_per_img=20)))

train_dataloader = dict(
    batch_size=4,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # no 2 s pause per epoch
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_iters = 150
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters - 20, eta_min=0., by_epoch=False, begin=20,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=10)
