# Tiny ADDP for tests and CPU demos: 64 px crops of the photos bundled with
# scikit-image (addp_mm's embedded dataset, generated on first use under
# data_root), an 8x8 token grid, a tiny VQGAN (64 codes) and a tiny MAGE-style
# predictor. The algorithm is the full ADDP step (same code path as ViT-B/L).
# The model (with the frozen parts' user paths), data, schedule and runtime are
# the tiny fragments in configs/_base_/, which the demo's ADDP config also uses.
#
# Tiny frozen parts: there are no released tiny weights. The tests write random
# ones (make_tiny_frozen_checkpoints in tests/helpers/addp.py) and pass them
# with --cfg-options model.tokenizer.checkpoint=... model.token_predictor.checkpoint=...
# Run first: no tiny frozen weights exist; write random ones with make_tiny_frozen_checkpoints (tests/helpers/addp.py) and pass them with --cfg-options model.tokenizer.checkpoint=... model.token_predictor.checkpoint=...
_base_ = [
    '../_base_/models/addp_vit-tiny-p8.py',
    '../_base_/datasets/embedded-photos_bs8_addp-64px.py',
    '../_base_/schedules/adamw_coslr-300i_bs8_addp-tiny.py',
    '../_base_/cpu_runtime.py',
]
