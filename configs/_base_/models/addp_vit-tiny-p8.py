# Tiny ADDP for tests and CPU demos: an 8x8 token grid at 64 px (patch 8), a
# 2-block 32-wide pixel encoder and token decoder, a tiny VQGAN (64 codes) and a
# tiny MAGE-style predictor. The algorithm is the full ADDP step (same code path
# as ViT-B/L).
custom_imports = dict(imports=['addp_mm'], allow_failed_imports=False)

# ---------------------------------------------------------------- user paths
# Tiny frozen parts: there are no released tiny weights. The tests write random
# ones (make_tiny_frozen_checkpoints in tests/helpers/addp.py) and pass them
# with --cfg-options model.tokenizer.checkpoint=... model.token_predictor.checkpoint=...
tokenizer_checkpoint = 'checkpoints/addp_tiny/vqgan_tiny.pth'
predictor_checkpoint = 'checkpoints/addp_tiny/mage_tiny.pth'
# deterministic teacher for the demo (the release behaviour is True,
# reference ``engine_pretrain.py``)
predictor_train_dropout = False

img_size = 64
patch_size = 8  # = VQGAN down-sampling factor 2**(len(ch_mult)-1)
num_tokens = (img_size // patch_size)**2
num_codes = 64
num_classes = 10

model = dict(
    type='ADDP',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], to_rgb=True),
    backbone=dict(
        type='ADDPPretrainEncoder', img_size=img_size, patch_size=patch_size, embed_dims=32,
        num_layers=2, num_heads=2, mlp_ratio=4., drop_rate=0.1, attn_drop_rate=0.1,
        tokenizer_drop_rate=0.1),
    neck=dict(
        type='ADDPDecoder', in_channels=32, embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=4.,
        drop_rate=0.1, attn_drop_rate=0.1, num_classes=num_classes),
    head=dict(type='ADDPLossHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    tokenizer=dict(
        type='VQGANTokenizer', ch=8, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=32,
        norm_num_groups=4,
        num_embeddings=num_codes, embed_dim=32, checkpoint=tokenizer_checkpoint),
    token_predictor=dict(
        type='MAGETokenPredictor', num_codes=num_codes, num_classes=num_classes,
        num_tokens=num_tokens, embed_dims=32, depth=1, num_heads=2, decoder_embed_dims=32,
        decoder_depth=1, decoder_num_heads=2, drop_rate=0.1, fake_class_id=num_codes,
        train_dropout=predictor_train_dropout, checkpoint=predictor_checkpoint),
    mask_generator=dict(
        type='ADDPNestedMaskGenerator', ratio_min=0.5, ratio_max=1.0, ratio_mu=0.55, ratio_std=0.25,
        num_grid=100, max_offset=5),
)
