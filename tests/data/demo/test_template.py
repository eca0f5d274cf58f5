import numpy as np

from cover.data import demo
from cover.data.demo import load_mni, mni_tissue_labels


def test_tissue_labels_are_computed_once_and_returned_as_private_copies():
    first = mni_tissue_labels()
    assert first.shape == load_mni("t1").shape and first.dtype == np.int64
    assert set(np.unique(first)) == {0, 1, 2, 3}
    first[:] = 7  # the caller owns its copy
    hits = demo._tissue_labels.cache_info().hits
    second = mni_tissue_labels()
    assert demo._tissue_labels.cache_info().hits == hits + 1  # not recomputed (that takes about 2 s)
    assert second.flags.writeable and not np.shares_memory(first, second)
    assert set(np.unique(second)) == {0, 1, 2, 3}
    # Tissue where the template's probability maps say so: most of the WM map's core is WM.
    assert np.mean(second[load_mni("wm") > 0.9] == 3) > 0.95
