# Frozen MAGE ViT-L/16 token predictor (ADDP-L's teacher): encoder 24 x 1024
# (16 heads), decoder 8 x 1024 (16 heads), vocabulary 1024 codes + 1000 classes
# + 1 mask id. Include this file in `_base_` and use the `token_predictor`
# dict (it defines no `model`).
#
# Get `mage-vitl-1600.pth` from the Google Drive link in the MAGE README
# (https://github.com/LTH14/mage, "Pre-trained checkpoints", MAGE ViT-L 1600
# epochs; the ADDP README links the same file) and put it at the path below,
# or override it with `--cfg-options model.token_predictor.checkpoint=...`.
# Nothing is downloaded at run time. The file's embedded `vqgan.*` copy is NOT
# loaded: the tokenizer reads its own checkpoint (see
# addp_mm/models/target_generators/mage_predictor.py).

mage_checkpoint = 'checkpoints/mage-vitl-1600.pth'

token_predictor = dict(
    type='MAGETokenPredictor',
    num_codes=1024,
    num_classes=1000,
    num_tokens=256,  # (256 / 16) ** 2 token-grid positions
    embed_dims=1024,
    depth=24,
    num_heads=16,
    decoder_embed_dims=1024,
    decoder_depth=8,
    decoder_num_heads=16,
    mlp_ratio=4.,
    drop_rate=0.1,
    fake_class_id=1100,
    # True reproduces the release: dropout active while ADDP pretrains.
    train_dropout=False,
    checkpoint=mage_checkpoint)
