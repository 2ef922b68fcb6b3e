# Drop-in example: take mmdet's stock Mask R-CNN R-50-FPN 1x config and swap
# ONLY the backbone (ADDPViTDetBackbone) and the neck (ADDPSimpleFPN). Everything else
# (data pipeline, heads, SGD 1x schedule) is mmdet's unchanged. This shows the
# plug-in use; for the ViTDet-style recipe see
# mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-100e_coco.py.
# Run first: put COCO 2017 under data/coco (mmdet's layout); set `pretrained` to a local ADDP file, e.g. checkpoints/addp-vit-base-16.pth
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# Local path of an ADDP checkpoint (any supported format); None = random init.
pretrained = None

model = dict(
    backbone=dict(
        _delete_=True,
        type='ADDPViTDetBackbone',
        arch='b',
        img_size=(800, 1333),
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(
        _delete_=True,
        type='ADDPSimpleFPN',
        backbone_channel=768,
        out_channels=256,
        num_outs=5))
