"""Model specs: the reference MLP, the small CNN, a user nn.Module as module:attr."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from strato import ConfigError
from strato_training.models import MLP, SmallCNN, build_model, count_parameters

USER_MODULE = """
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))

    def forward(self, x):
        return self.body(x)

instance = Net(num_classes=3)
not_a_model = 42

def make_string():
    return "nope"
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "strato_user_net.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "strato_user_net"


def test_reference_mlp_is_784_128_10() -> None:
    model = build_model("mlp", input_shape=(1, 28, 28), num_classes=10)
    assert isinstance(model, MLP)
    assert count_parameters(model) == 784 * 128 + 128 + 128 * 10 + 10
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_small_cnn_output_shape() -> None:
    model = build_model("cnn", input_shape=(1, 28, 28), num_classes=4)
    assert isinstance(model, SmallCNN)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)


def test_user_module_class_gets_num_classes(user_module: str) -> None:
    model = build_model(f"{user_module}:Net", input_shape=(1, 28, 28), num_classes=7)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_user_module_instance_is_used_as_is(user_module: str) -> None:
    model = build_model(f"{user_module}:instance", input_shape=(1, 28, 28), num_classes=10)
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 3)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resnet9000", "unknown model 'resnet9000'; expected one of mlp, cnn or 'module:attr'"),
        ("no_such_module_xyz:Net", "cannot import module"),
        ("strato_user_net:Missing", "has no 'Missing'"),
        ("strato_user_net:not_a_model", "neither an nn.Module nor a callable"),
        ("strato_user_net:make_string", "returned str, not an nn.Module"),
    ],
)
def test_bad_model_specs(user_module: str, spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        build_model(spec, input_shape=(1, 28, 28), num_classes=10)
