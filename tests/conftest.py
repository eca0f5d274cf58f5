"""Shared test settings: small thread count and deterministic algorithms on CPU."""

import torch

torch.set_num_threads(2)
