"""Which weights a forward pass reads, by storage: a check that two passes share one copy of a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class _ParametersRead(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.storages: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tree_leaves((args, kwargs)):
            if isinstance(value, nn.Parameter):
                self.storages.add(value.untyped_storage().data_ptr())
        return func(*args, **kwargs)


def parameters_read(run: Callable[[], Any]) -> set[int]:
    """The storage addresses of every ``nn.Parameter`` a torch function receives while ``run()`` runs
    (registered or not: a hidden second copy of a model shows up with storages of its own)."""
    with _ParametersRead() as mode:
        run()
    return mode.storages


def storages(parameters) -> set[int]:
    """The storage addresses of ``parameters``."""
    return {p.untyped_storage().data_ptr() for p in parameters}
