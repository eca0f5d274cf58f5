"""Two-process gloo runs of the binary contrastive methods, for tests/methods/test_infonce_distributed.py.

The parent saves a method's initial weights and a global batch of view pairs; each spawned process
joins a gloo group, takes its slice of the batch (rank 0 the first half), runs the method under
DDP as pretraining does, and rank 0 writes the mean of the processes' logged values and the
DDP-averaged gradients.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from cover.methods.dense_infonce import DenseInfoNCEMethod
from cover.methods.simclr import SimCLRMethod
from cover.nn.unet import UNet
from cover.views import ViewPair

CHANNELS = (4, 8, 16, 8, 4)


def build(method: str) -> torch.nn.Module:
    """The tiny method both the one-process reference and the workers use."""
    backbone = UNet(2, 1, CHANNELS)
    if method == "simclr":
        return SimCLRMethod(backbone, temperature=0.2, hidden_dim=16, proj_dim=8)
    return DenseInfoNCEMethod(backbone, temperature=0.3, num_pixels=48, levels=2, hidden_dim=16, proj_dim=8)


def run_rank(rank: int, world: int, method: str, payload: str, result: str, init_file: str) -> None:
    """One DDP process: forward + backward on this rank's half of the saved global batch."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    data = torch.load(payload, weights_only=False)
    model = build(method)
    model.load_state_dict(data["state"])
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model, static_graph=True)
    share = data["views"].view_a.shape[0] // world
    part = slice(rank * share, (rank + 1) * share)
    views = ViewPair(*(t[part] for t in data["views"]))
    out = ddp(views)
    out["loss"].backward()
    logged = torch.stack([out[k].detach().float() for k in ("loss", "acc_pos")])
    dist.all_reduce(logged)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"logged": (logged / world).tolist(), "grads": grads, "local_loss": out["loss"].item()}, result)
    else:
        torch.save({"grads": grads, "local_loss": out["loss"].item()}, Path(result).with_suffix(".rank1"))
    dist.barrier()  # both ranks have written their results
    # Leave without destroying the DDP reducer and the gloo group: that teardown deadlocked here
    # under load (the reducer's destructor, holding the GIL, joins a gloo thread that waits for
    # the GIL to free a finished all-reduce's tensors). Exit code 0 tells the parent all went well.
    os._exit(0)
