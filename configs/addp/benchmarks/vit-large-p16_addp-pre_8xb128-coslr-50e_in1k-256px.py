# ImageNet-1k fine-tuning of an ADDP ViT-L/16 encoder at 256x256: the recipe of the
# official `finetune_addp_large_50ep.sh`, reported top-1 85.9.
# Total batch 1024 (8 GPUs x 128); lr 1e-3 = blr 2.5e-4 x 1024/256, layer decay 0.8,
# drop path 0.2, 5 warmup epochs; everything else as the ViT-B recipe. User paths: the
# pretraining checkpoint in configs/_base_/models/vit-large-p16_addp-finetune.py,
# ImageNet in configs/_base_/datasets/imagenet_bs128_addp-finetune-256px.py.
# Run first: put ImageNet under data/imagenet/ and the ADDP-L release at checkpoints/addp-vit-large-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    '../../_base_/models/vit-large-p16_addp-finetune.py',
    '../../_base_/datasets/imagenet_bs128_addp-finetune-256px.py',
    '../../_base_/schedules/adamw-ld_coslr-50e_bs1024_addp-finetune.py',
    '../../_base_/finetune_runtime.py',
]
