# ImageNet-1k fine-tuning of an ADDP ViT-B/16 encoder at 256x256: the recipe of the
# official `finetune_addp_base_100ep.sh` / `main_finetune.py`, reported
# top-1 83.9. Total batch 1024 (8 GPUs x 128); lr 4e-3 = blr 1e-3 x 1024/256.
# The parts are in configs/_base_/: the model (user path: the pretraining
# checkpoint), ImageNet at 256 px (user paths: data_root, ann files), the schedule
# and the runtime.
#
#   CFG=configs/addp/benchmarks/vit-base-p16_addp-pre_8xb128-coslr-100e_in1k-256px.py
#   python tools/train.py $CFG --cfg-options model.backbone.init_cfg.checkpoint=checkpoints/addp-vit-base-16.pth
#   python tools/test.py $CFG work_dirs/<config name>/epoch_100.pth
# Run first: put ImageNet under data/imagenet/ and the ADDP-B release at checkpoints/addp-vit-base-16.pth (docs/checkpoints.md: External checkpoints)
_base_ = [
    '../../_base_/models/vit-base-p16_addp-finetune.py',
    '../../_base_/datasets/imagenet_bs128_addp-finetune-256px.py',
    '../../_base_/schedules/adamw-ld_coslr-100e_bs1024_addp-finetune.py',
    '../../_base_/finetune_runtime.py',
]
