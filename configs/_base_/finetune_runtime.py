# Runtime of the ADDP ImageNet fine-tuning configs: mmpretrain's default runtime,
# keeping the best top-1 checkpoint besides the last three, one seed per rank.
_base_ = ['mmpretrain::_base_/default_runtime.py']

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)
