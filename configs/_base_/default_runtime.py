# Runtime of the ADDP pretraining configs: mmpretrain's scope, a checkpoint
# per epoch (the last three kept), TensorBoard logs, and one seed per rank
# (the reference seeds every rank differently: one mask ratio per GPU).
default_scope = 'mmpretrain'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # written atomically; with every process's random states, for an exact --resume
    # (docs/checkpoints.md). tools/train.py sets both for any config.
    checkpoint=dict(type='ADDPCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    random_state=dict(type='ADDPRandomStateHook'),
)
env_cfg = dict(
    cudnn_benchmark=True,  # fixed input sizes: cuDNN picks the fastest VQGAN convolutions once
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(
    type='UniversalVisualizer',
    vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
log_processor = dict(window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
