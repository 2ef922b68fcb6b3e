# Frozen VQGAN tokenizer of MAGE/ADDP (MaskGIT-style port): 1024 codes x 256
# dims, down-sampling factor 2 ** (len(ch_mult) - 1) = 16, so a 256x256 image
# becomes a 16x16 token grid. Include this file in `_base_` and use the
# `tokenizer` dict (it defines no `model`, so it composes with other bases).
#
# Get `vqgan_jax_strongaug.ckpt` from the Google Drive link in the MAGE README
# (https://github.com/LTH14/mage, "Pre-trained tokenizer"; the ADDP README links
# the same file) and put it at the path below, or override it with
# `--cfg-options model.tokenizer.checkpoint=/path/to/vqgan_jax_strongaug.ckpt`.
# Nothing is downloaded at run time. The official file loads as is (tensors at
# the top level or under 'state_dict'); tools/model_converters/vqgan_to_mm.py
# writes an mmengine-style copy if you prefer.

vqgan_checkpoint = 'checkpoints/vqgan_jax_strongaug.ckpt'

tokenizer = dict(
    type='VQGANTokenizer',
    ch=128,
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    in_channels=3,
    out_channels=3,
    z_channels=256,
    num_embeddings=1024,
    embed_dim=256,
    checkpoint=vqgan_checkpoint)
