# 224x224 variant of the ViT-L fine-tuning recipe (ADDP itself fine-tunes at 256; this is
# for comparison with 224-px methods). The 16x16 pretraining pos-embed is resized
# bicubically to 14x14 on load. Train: RandomResizedCrop 224; eval: Resize 256 +
# CenterCrop 224 (crop_pct 0.875, what the reference main_finetune.py does at <= 224).
# Run first: put ImageNet under data/imagenet/ and the ADDP-L release at checkpoints/addp-vit-large-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    '../../_base_/models/vit-large-p16_addp-finetune.py',
    '../../_base_/datasets/imagenet_bs128_addp-finetune-224px.py',
    '../../_base_/schedules/adamw-ld_coslr-50e_bs1024_addp-finetune.py',
    '../../_base_/finetune_runtime.py',
]

img_size = 224
model = dict(backbone=dict(img_size=img_size))
