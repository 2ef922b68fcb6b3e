# Mask R-CNN with an ADDP ViT-B/16 backbone (ViTDet-style: window attention +
# global blocks 2/5/8/11, relative position bias, simple feature pyramid),
# LSJ 1024, 100 epochs, AdamW lr 1e-4, layer decay 0.7, drop path 0.1.
#
# ASSUMPTION: the ADDP paper's detection settings were not released; this is
# the ViTDet Mask R-CNN protocol (Li et al. 2022, `mask_rcnn_vitdet_b_100ep`),
# which we assume produced ADDP's reported COCO AP^box 51.7 (ViT-B). It is not
# a verified reproduction of the paper's recipe.
# Run first: put COCO 2017 under data/coco/ and the ADDP-B release at checkpoints/addp-vit-base-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/lsj-100e_coco-instance.py',
]

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ADDP pretraining checkpoint: our Runner output (`backbone.` keys), an
# official release (HF `Changyao/ADDP`, converted or raw `{'model': ...}`) or
# an official fine-tuning file. Download it yourself and put the local path here.
pretrained = 'checkpoints/addp-vit-base-16.pth'

norm_cfg = dict(type='LN2d', requires_grad=True)  # mmpretrain's LayerNorm2d
image_size = (1024, 1024)
batch_augments = [dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]

model = dict(
    data_preprocessor=dict(pad_size_divisor=32, batch_augments=batch_augments),
    backbone=dict(
        _delete_=True,
        type='ADDPViTDetBackbone',
        arch='b',
        img_size=image_size,
        pretrain_img_size=256,  # ADDP pretrains at 256 px (16x16 grid)
        patch_size=16,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        use_rel_pos=True,
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(
        _delete_=True,
        type='ADDPSimpleFPN',
        backbone_channel=768,
        in_channels=[192, 384, 768, 768],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7))
