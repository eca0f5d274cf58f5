import dataclasses

import pytest
import torch
import yaml

from cover.devices import DeviceDefaults, apply_backend_settings, device_defaults, fill_device_defaults
from cover.errors import ConfigError


def test_cuda_defaults_are_chosen_without_a_gpu():
    """The CUDA choice is a function of facts passed in, so it is tested on a CPU machine."""
    ampere = device_defaults("cuda", cpus=16, processes=1, bf16_supported=True)
    assert ampere == DeviceDefaults(amp="bf16", channels_last=True, num_workers=4, cudnn_benchmark=True, tf32=True)
    older = device_defaults("cuda", cpus=16, processes=8, bf16_supported=False)
    assert older.amp == "fp16" and older.num_workers == 1  # 16 cores over 8 processes: 2 each, one left to the step
    assert device_defaults("cuda", cpus=1, processes=1, bf16_supported=True).num_workers == 0


def test_cpu_defaults_keep_the_cpu_fast_paths():
    assert device_defaults("cpu", cpus=64) == DeviceDefaults("none", False, 0, False, False)


@dataclasses.dataclass
class _Config:
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | None = None
    num_workers: int | None = None
    cudnn_benchmark: bool | None = None
    tf32: bool | None = None


def test_given_settings_win_over_the_device_defaults():
    given = _Config(device="cuda", amp="none", channels_last=False, tf32=False)
    filled = fill_device_defaults(given, cpus=8, processes=1, bf16_supported=True)
    assert (filled.amp, filled.channels_last, filled.tf32) == ("none", False, False)
    assert (filled.num_workers, filled.cudnn_benchmark) == (4, True)
    assert fill_device_defaults(_Config(device="cpu")).amp == "none"
    with pytest.raises(ConfigError, match="amp: 'fp32' is not allowed"):
        fill_device_defaults(_Config(device="cpu", amp="fp32"))
    with pytest.raises(ConfigError, match="device: 'gpu' is not a device"):
        fill_device_defaults(_Config(device="gpu"))


def test_backend_switches_are_left_alone_off_cuda(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    apply_backend_settings(_Config(cudnn_benchmark=True, tf32=True), torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False


def test_dry_run_states_the_device_settings(capsys):
    from cover.cli.pretrain import pretrain

    pretrain(dim=2, device="cuda", tf32=False, num_workers=3, dry_run=True)
    text = capsys.readouterr().out
    assert text.startswith("# amp, channels_last, num_workers, cudnn_benchmark, tf32: defaults for a cuda device")
    shown = yaml.safe_load(text)
    assert shown["amp"] in ("bf16", "fp16") and shown["channels_last"] is True and shown["cudnn_benchmark"] is True
    assert shown["tf32"] is False and shown["num_workers"] == 3  # given values win
    pretrain(dim=2, device="cpu", dry_run=True)
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["amp"], shown["channels_last"], shown["num_workers"], shown["tf32"]) == ("none", False, 0, False)
