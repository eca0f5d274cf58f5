"""The MNI152 template and its labels."""

import numpy as np

from cover.data.demo import template
from cover.data.demo.template import load_mni, mni_tissue_labels, region_labels


def test_tissue_labels_are_computed_once_and_returned_as_private_copies():
    first = mni_tissue_labels()
    assert first.shape == load_mni("t1").shape and first.dtype == np.int64
    assert set(np.unique(first)) == {0, 1, 2, 3}
    first[:] = 7  # the caller owns its copy
    hits = template._tissue_labels.cache_info().hits
    second = mni_tissue_labels()
    assert template._tissue_labels.cache_info().hits == hits + 1  # not recomputed (that takes about 2 s)
    assert second.flags.writeable and not np.shares_memory(first, second)
    assert set(np.unique(second)) == {0, 1, 2, 3}
    # Tissue where the template's probability maps say so: most of the WM map's core is WM.
    assert np.mean(second[load_mni("wm") > 0.9] == 3) > 0.95


def test_region_labels_split_the_hemispheres_at_the_midline_and_find_the_ventricles():
    regions = region_labels()
    assert set(np.unique(regions)) == {0, 1, 2, 3, 4, 5}
    assert (np.nonzero(regions == 1)[0] < 98).all() and (np.nonzero(regions == 2)[0] >= 98).all()
    assert (np.nonzero(regions == 3)[0] < 98).all() and (np.nonzero(regions == 4)[0] >= 98).all()
    for left, right in ((1, 2), (3, 4)):  # the template is symmetric: hemispheres of similar size
        assert 0.8 < (regions == left).sum() / (regions == right).sum() < 1.25
    vx, vy, vz = np.nonzero(regions == 5)
    assert 5000 < vx.size < 40000 and abs(vx.mean() - 98) < 5 and 60 < vz.mean() < 100
