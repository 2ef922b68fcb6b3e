# Drop-in example: take mmseg's stock UperNet R-50 ADE20k config and swap ONLY
# the backbone (ADDPVisionTransformer with feature-map outputs), adding the Feature2Pyramid neck a plain ViT needs
# (its four outputs share stride 16; UperNet wants strides 4/8/16/32) and the
# matching head widths. Data, schedule and heads are mmseg's unchanged. For the
# MAE/BEiT-style recipe see upernet_addp-vit-base-p16_8xb2-amp-160k_ade20k-512x512.py.
# Run first: put ADE20k under data/ade/ADEChallengeData2016 (mmseg's layout); set `pretrained` to a local ADDP file, e.g. checkpoints/addp-vit-base-16.pth
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# Local path of an ADDP checkpoint (any supported format); None = random init.
pretrained = None

model = dict(
    # the base sets pretrained='open-mmlab://resnet50_v1c' for the ResNet it
    # builds; mmseg would hand it to the new backbone, so clear it
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ADDPVisionTransformer',
        arch='b',
        img_size=(512, 512),
        patch_size=16,
        out_type='featmap',  # stride-16 maps of the blocks below, cls token dropped
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        pretrained=pretrained),
    neck=dict(type='Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))
