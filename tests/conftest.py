"""Shared test settings: intra-op threads, a private data cache, ``cuda`` tests skipped without CUDA.

The whole suite runs as ``python -m pytest -q -n 2`` (pytest-xdist, one worker per core of the
2-core machines): a worker, and every process a test starts from it, uses one thread, since two
workers with two threads each would oversubscribe the cores. A plain ``pytest`` run (one
process) keeps two intra-op threads.

Nothing here seeds random generators or switches on deterministic algorithms: tests that need
reproducible numbers seed their own generators (``torch.manual_seed`` or an explicit
``torch.Generator``).
"""

import os
from collections.abc import Iterator

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses tests start
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs with ``cache_dir: auto`` write their decoded arrays to a session folder, not the user's cache."""
    before = os.environ.get("COVER_CACHE_DIR")
    os.environ["COVER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cover-cache"))
    yield
    if before is None:
        os.environ.pop("COVER_CACHE_DIR", None)
    else:
        os.environ["COVER_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _library_logging() -> None:
    """Each test starts with ``cover``'s loggers as a library leaves them.

    An in-process CLI run configures them (own stderr handler, no propagation to the root logger,
    where ``caplog`` listens); without this, a ``caplog`` test failed when such a test ran before it
    on the same worker (``-n 2`` orders the files differently from run to run).
    """
    from cover.runtime import reset_logging

    reset_logging()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    import pytest

    skip = pytest.mark.skip(reason="cuda: no CUDA device here (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
