"""Shared test settings: two intra-op threads for every test.

Nothing here seeds random generators or switches on deterministic algorithms: tests that need
reproducible numbers seed their own generators (``torch.manual_seed`` or an explicit
``torch.Generator``).
"""

import torch

torch.set_num_threads(2)
