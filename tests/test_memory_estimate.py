"""Settings that cannot fit fail before training, naming the settings to change."""

from __future__ import annotations

import pytest
import torch

from dataflex.train.signals import memory


def test_estimate_counts_gradients_and_features():
    assert memory.gradient_feature_bytes(1000, 8, 64, 10) == 4 * (8 * 1000 + 10 * 64)


def test_too_large_a_setting_names_the_knobs(monkeypatch):
    model = torch.nn.Linear(100, 100)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device: 1 << 20)
    with pytest.raises(
        MemoryError, match=r"trainer\.grad_batch_size \(now 64\).*component\.proj_dim \(now 8192\)"
    ):
        memory.check_gradient_feature_memory(
            model, grad_batch_size=64, proj_dim=8192, num_features=1000, device="cpu"
        )
    memory.check_gradient_feature_memory(model, grad_batch_size=1, proj_dim=8, num_features=10, device="cpu")


def test_host_memory_is_read():
    assert memory.available_memory_bytes("cpu") > 0
