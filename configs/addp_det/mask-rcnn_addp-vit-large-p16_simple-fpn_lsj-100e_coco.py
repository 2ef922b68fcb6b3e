# Mask R-CNN with an ADDP ViT-L/16 backbone: global blocks 5/11/17/23,
# layer decay 0.8, drop path 0.4 (ViTDet-L), otherwise as the ViT-B config.
#
# ASSUMPTION: ViTDet protocol (`mask_rcnn_vitdet_l_100ep`); ADDP's own
# detection recipe (reported AP^box 54.6 for ViT-L) was not released.
# Run first: put COCO 2017 under data/coco/ and the ADDP-L release at checkpoints/addp-vit-large-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = ['./mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-100e_coco.py']

pretrained = 'checkpoints/addp-vit-large-16.pth'

model = dict(
    backbone=dict(
        arch='l',
        global_attn_indexes=(5, 11, 17, 23),
        drop_path_rate=0.4,
        pretrained=pretrained),
    neck=dict(backbone_channel=1024, in_channels=[256, 512, 1024, 1024]))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
