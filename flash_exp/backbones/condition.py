"""What a denoiser receives besides (x_t, t), in a form the method can batch without knowing the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def _cat(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values, dim=0)
    if isinstance(first, dict):
        return {k: _cat([v[k] for v in values]) for k in first}
    if isinstance(first, list | tuple):
        return type(first)(_cat(list(items)) for items in zip(*values, strict=True))
    if first is None:
        return None
    raise TypeError(f"cannot batch a condition value of type {type(first).__name__}")


def _index(value: Any, index: torch.Tensor | slice) -> Any:
    if isinstance(value, torch.Tensor):
        return value[index]
    if isinstance(value, dict):
        return {k: _index(v, index) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_index(v, index) for v in value)
    return value


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


@dataclass
class Condition:
    """Denoiser conditioning for a batch of B samples.

    ``kwargs`` are keyword arguments of the denoiser's forward (``encoder_hidden_states`` (B, L, D),
    ``added_cond_kwargs``, ``encoder_attention_mask``, adapter residuals, ...), every tensor with the
    batch first. ``concat`` (B, C', h, w) are extra channels concatenated to x_t (inpainting mask and
    masked-image latents, a low-resolution image), or None.
    """

    kwargs: dict[str, Any] = field(default_factory=dict)
    concat: torch.Tensor | None = None

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        """Stack conditions along the batch (e.g. conditional and null for one CFG call)."""
        return Condition(
            kwargs=_cat([c.kwargs for c in conditions]),
            concat=_cat([c.concat for c in conditions]) if conditions[0].concat is not None else None,
        )

    def select(self, index: torch.Tensor | slice) -> Condition:
        """The sub-batch at ``index``."""
        return Condition(kwargs=_index(self.kwargs, index), concat=_index(self.concat, index))

    def to(self, device: torch.device) -> Condition:
        """The same condition with every tensor on ``device``."""
        return Condition(kwargs=_to(self.kwargs, device), concat=_to(self.concat, device))

    def with_concat(self, concat: torch.Tensor | None) -> Condition:
        return Condition(kwargs=self.kwargs, concat=concat)
