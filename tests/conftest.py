"""Shared test settings: two intra-op threads for every test.

Nothing here seeds random generators or switches on deterministic algorithms: tests that need
reproducible numbers seed their own generators (``torch.manual_seed`` or an explicit
``torch.Generator``).
"""

import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    import pytest

    skip = pytest.mark.skip(reason="cuda: no CUDA device here (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
