"""The contract every registered architecture keeps, run over all of them (as SMP's BaseModelTester
and timm's test_models.py do): any input size gives logits at that size; the config describes the
network (rebuilding from it gives the same tensors); a checkpoint round trip and BatchNorm folding
change no output; the input gets a gradient."""
import copy

import pytest
import torch

import hyperseg
from hyperseg.model import HyperSegConfig

from .calibrate import calibrated

ARCHITECTURES = hyperseg.list_models()
SIZE = (64, 96)  # not a multiple of every output stride: the padding path runs too




@pytest.fixture(scope="module", params=ARCHITECTURES)
def built(request):
    torch.manual_seed(0)
    model = calibrated(hyperseg.create_model(request.param, num_classes=4))
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    return request.param, model, x, y


def test_logits_at_the_input_size(built):
    name, model, x, y = built
    assert y.shape == (1, 4, *SIZE) and torch.isfinite(y).all(), name
    assert model.num_classes == 4


def test_the_config_rebuilds_the_same_network(built):
    name, model, x, y = built
    config = HyperSegConfig.from_dict(model.config.to_dict())
    assert config == model.config
    rebuilt = hyperseg.HyperSeg(config).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: the same tensors by name and shape
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), y, rtol=0, atol=0)


def test_a_checkpoint_round_trip_changes_nothing(built, tmp_path):
    name, model, x, y = built
    loaded = hyperseg.load_model(hyperseg.save_model(model, tmp_path / f"{name}.pt"))
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=0, atol=0)


def test_folding_batchnorm_changes_no_output(built):
    name, model, x, y = built
    double = copy.deepcopy(model).double()
    with torch.no_grad():
        torch.testing.assert_close(hyperseg.fuse_bn(double)(x.double()), double(x.double()), rtol=1e-9, atol=1e-9)


def test_the_input_gets_a_finite_gradient(built):
    name, model, x, y = built
    # batch 2: the deepest context level of some architectures is 1x1 here, and training-mode
    # BatchNorm needs more than one value per channel
    x = torch.cat([x, x.flip(-1)]).requires_grad_(True)
    copy.deepcopy(model).train()(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
