import math

import pytest
import torch
from torch import nn

from cover.downstream.optim import backbone_factor, build_optimizer, hold_frozen


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


ALL = ("0.weight", "0.bias", "2.weight", "2.bias")  # every backbone weight came from the checkpoint


# Hand-written schedule of a 10-step run with 2 warm-up steps: linear warm-up 1/2, 2/2, then
# cosine over the remaining 8 steps.
def head_factor(step: int) -> float:
    return (step + 1) / 2 if step < 2 else 0.5 * (1 + math.cos(math.pi * (step - 2) / 8))


def test_group_learning_rates_follow_scale_freeze_and_rewarmup():
    net = Net()
    optimizer, scheduler, trainable = build_optimizer(
        net, 0.1, 0.0, 10, 2, pretrained=ALL, backbone_lr_scale=0.25, freeze_steps=4
    )
    head, backbone = optimizer.param_groups
    assert head["name"] == "head" and backbone["name"] == "pretrained"
    assert [id(p) for p in head["params"]] == [id(p) for p in net.head.parameters()]
    assert [id(p) for p in backbone["params"]] == [id(p) for p in net.backbone.parameters()]
    assert len(trainable) == 6
    # Backbone: 0 for steps 0-3, re-warm-up 1/2 at step 4, then 0.25 x the head's cosine.
    expected_backbone = [0, 0, 0, 0, 0.5 * 0.25 * head_factor(4)] + [0.25 * head_factor(s) for s in range(5, 10)]
    for step in range(10):
        assert head["lr"] == pytest.approx(0.1 * head_factor(step)), step
        assert backbone["lr"] == pytest.approx(0.1 * expected_backbone[step]), step
        optimizer.step()
        scheduler.step()


def test_without_freeze_steps_the_backbone_is_only_scaled():
    assert [backbone_factor(s, 10, 2, 0.3, 0) for s in range(10)] == pytest.approx(
        [0.3 * head_factor(s) for s in range(10)]
    )


def test_constant_schedule_warms_up_then_holds_whatever_the_run_length():
    # Hand-written: warm-up 1/3, 2/3, 3/3, then 1 for ever; the backbone re-warms after freeze_steps.
    for total in (6, 600):
        optimizer, scheduler, _ = build_optimizer(
            Net(), 0.1, 0.0, total, 3, pretrained=ALL, backbone_lr_scale=0.5, freeze_steps=2, schedule="constant"
        )
        head, backbone = optimizer.param_groups
        rates = []
        for _ in range(6):
            rates.append((head["lr"], backbone["lr"]))
            optimizer.step()
            scheduler.step()
        assert [h for h, _ in rates] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.1])
        assert [b for _, b in rates] == pytest.approx([0, 0, 0.05 / 3, 0.1 / 3 * 0.5 * 2, 0.05, 0.05])


def test_frozen_phase_leaves_backbone_bit_identical_then_trains_it():
    net = Net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer, scheduler, trainable = build_optimizer(net, 0.05, 1e-2, 8, 1, pretrained=ALL, freeze_steps=3)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    for step in range(8):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        hold_frozen(optimizer, step, 3)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        state = net.state_dict()
        backbone_same = all(torch.equal(state[k], start[k]) for k in start if k.startswith("backbone."))
        assert backbone_same == (step < 3), step  # steps 0, 1, 2 frozen; step 3 updates
        assert not torch.equal(state["head.weight"], start["head.weight"])
        if step < 3:  # Adam keeps no moments of the frozen backbone (weight decay included)
            assert all(not optimizer.state[p] for p in net.backbone.parameters())


def test_backbone_weights_not_loaded_train_with_the_head():
    # transfer: encoder / an encoder-only export: only the first layer is pretrained; the fresh
    # second layer must not be frozen or scaled with it.
    net = Net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer, scheduler, trainable = build_optimizer(
        net, 0.05, 0.0, 6, 1, pretrained=("0.weight", "0.bias"), backbone_lr_scale=0.5, freeze_steps=3
    )
    head, backbone = optimizer.param_groups
    assert [id(p) for p in backbone["params"]] == [id(p) for p in net.backbone[0].parameters()]
    assert {id(p) for p in head["params"]} == {id(p) for p in (*net.backbone[2].parameters(), *net.head.parameters())}
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    hold_frozen(optimizer, 0, 3)
    optimizer.step()
    state = net.state_dict()
    assert torch.equal(state["backbone.0.weight"], start["backbone.0.weight"])  # pretrained: frozen
    assert not torch.equal(state["backbone.2.weight"], start["backbone.2.weight"])  # fresh: trains


def test_scratch_and_frozen_parameters():
    net = Net()
    optimizer, _, trainable = build_optimizer(net, 0.1, 0.0, 10, 2, pretrained=(), backbone_lr_scale=0.1)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert len(optimizer.param_groups[0]["params"]) == len(trainable) == 6
    for p in net.backbone[0].parameters():  # like freeze=encoder: left out of every group
        p.requires_grad_(False)
    optimizer, _, trainable = build_optimizer(net, 0.1, 0.0, 10, 2, pretrained=ALL, backbone_lr_scale=0.1)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2] and len(trainable) == 4
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * 0.1 * 0.5)


def test_cli_flags_and_their_checks(tmp_path, monkeypatch, capsys):
    import yaml

    from _support.cli import run_cli_output as run

    monkeypatch.chdir(tmp_path)
    args = ["finetune", "--checkpoint", "runs/ct", "--freeze-steps", "30", "--backbone-lr-scale", "0.25", "--dry-run"]
    code, out, lines = run(args, monkeypatch, capsys)
    shown = yaml.safe_load(out)
    assert code == 0 and lines == [] and (shown["freeze_steps"], shown["backbone_lr_scale"]) == (30, 0.25)
    code, _, lines = run([*args[:-2], "0", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: backbone_lr_scale: 0.0 must be positive"]
    code, _, lines = run(["finetune", "--freeze-steps", "-1", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: freeze_steps: must be at least 0"]
    code, out, lines = run(["finetune", "--transfer", "encoder", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and yaml.safe_load(out)["transfer"] == "encoder"
    code, _, lines = run(["finetune", "--transfer", "decoder", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: transfer: 'decoder' is not allowed (allowed: all, encoder)"]
    code, _, lines = run(["finetune", "--dim", "4", "--images", "x", "--labels", "y", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: dim: 4 is not allowed (allowed: 2, 3)"]  # was a KeyError traceback
