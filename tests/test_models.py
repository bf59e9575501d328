import pytest
import torch

from cifarlab.config import ModelConfig
from cifarlab.errors import ConfigError
from cifarlab.models import MODELS, build_model, count_parameters


def test_tutorial_baseline_has_exactly_550570_parameters():
    assert count_parameters(build_model(ModelConfig(), 10)) == 550_570


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("variant", [{}, {"batchnorm": True, "dropout": (0.2, 0.3), "dense_dropout": 0.5},
                                     {"batchnorm": True, "dropout": (0.1, 0.1), "dropout_before_bn": True,
                                      "pool": "avg"}])
def test_every_model_trains_on_a_tiny_batch(name, variant):
    cfg = ModelConfig(name=name, widths=(8, 16), dense=(16,), **variant)
    model = build_model(cfg, num_classes=7)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'resnet999'; valid: .*vgg"):
        build_model(ModelConfig(name="resnet999"), 10)


def test_he_uniform_bounds():
    model = build_model(ModelConfig(), 10)
    conv = model[0][0]
    fan_in = conv.weight[0].numel()
    assert conv.weight.abs().max() <= (6 / fan_in) ** 0.5 and (conv.bias == 0).all()


def test_flip_tta_averages_the_mirrored_logits():
    from cifarlab.evaluate import predict
    model = build_model(ModelConfig(widths=(8, 16), dense=(16,)), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain, flipped = model(x), model(x.flip(3))
        assert torch.allclose(predict(model, x, "none"), plain)
        assert torch.allclose(predict(model, x, "flip"), (plain + flipped) / 2, atol=1e-6)
        assert not torch.allclose(plain, flipped)
