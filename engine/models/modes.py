"""A module's train/eval mode for the length of a block, put back as it was after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block and in its own mode again after, also on an
    error: samplers and the FLOP count run on a live run's model, whose mode is the loop's."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
