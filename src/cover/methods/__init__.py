"""Pretraining methods; importing this package registers the built-in ones."""

from cover.methods import cover as _cover  # noqa: F401
from cover.methods import dense_infonce as _dense_infonce  # noqa: F401
from cover.methods import scratch as _scratch  # noqa: F401
from cover.methods import simclr as _simclr  # noqa: F401
from cover.methods.base import PretrainMethod
from cover.methods.registry import METHODS, build_method, register_method

__all__ = ["METHODS", "PretrainMethod", "build_method", "register_method"]
