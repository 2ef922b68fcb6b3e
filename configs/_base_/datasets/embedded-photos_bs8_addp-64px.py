# 64 px crops of the photos bundled with scikit-image (addp_mm's embedded dataset,
# generated on first use under data_root) for the tiny ADDP configs, 8 per batch.
data_root = 'data/embedded_photos'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.2, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,  # needs workers; the codebases' tools default it to True
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ADDPEmbeddedPhotos', data_root=data_root, split='train',
                 crop_size=64, pipeline=train_pipeline))
