"""Issue 5 acceptance: optimized images excite their channel far beyond every real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.images import list_images
from convlens.lens.featurevis import activation_of, visualize

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.mark.parametrize("layer", ["blocks.4", "conv_head"])
def test_saved_png_beats_every_real_photo_by_3x(builtin_model, photos, sample_photos, tmp_path, layer):
    lm = builtin_model
    real = [p for p in list_images([photos]) if p.name != "truncated.jpg"] + list(sample_photos.values())
    x = lm.preprocess(real)
    targets = list(range(8))
    with torch.no_grad():
        photo_acts = torch.stack([activation_of(lm, layer, lm.config.denormalize(x), [c] * len(real))
                                  for c in targets], 1)
    mean, best = photo_acts.mean(0), photo_acts.max(0).values  # per channel, over the photos

    res = visualize(lm, layer, "0-7", steps=32, seed=0)
    files = res.save(tmp_path)["image"]
    pix = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1)
                       for f in files])
    again = activation_of(lm, layer, pix, targets)  # the saved PNGs, run through the model again
    torch.testing.assert_close(again, res.activations, rtol=1e-3, atol=1e-3)
    margin = (again - mean) / (best - mean)
    assert (margin >= 3).all(), f"{layer}: (ours - photos' mean) / (best photo - mean) = {margin.tolist()}"
