"""Model anatomy: every preset x every norm at 32 and 64 px, the tutorial VGG unchanged, bad shapes refused."""

import pytest
import torch
from torch import nn

from cifarlab import config as C
from cifarlab.config import ModelConfig
from cifarlab.errors import ConfigError
from cifarlab.models import MODELS, build_model, count_parameters
from cifarlab.models.layers import ACTIVATIONS, BLOCKS, NORMS


def model_config(name: str = "vgg", **keys) -> ModelConfig:
    """The [model] section a config file with these keys resolves to (the preset, then the keys)."""
    return C.from_dict({"model": {"name": name, **keys}}).model


def test_tutorial_baseline_has_exactly_550570_parameters():
    assert count_parameters(build_model(ModelConfig(), 10)) == 550_570


def test_resnet18_has_the_common_cifar_implementations_parameter_count():
    # kuangliu/pytorch-cifar's ResNet18 for 10 classes: 11,173,962
    assert count_parameters(build_model(model_config("resnet18"), 10)) == 11_173_962
    # its PreActResNet18 has 11,171,146; ours adds the paper's final BatchNorm (2 x 512)
    assert count_parameters(build_model(model_config("preact_resnet18"), 10)) == 11_171_146 + 1024


def test_config_accepts_every_norm_and_activation_the_registries_build_and_nothing_else():
    for key, registry in (("norm", NORMS), ("activation", ACTIVATIONS)):
        assert C.REGISTERED["model", key] is registry
        for name in registry.names():
            assert getattr(C.from_dict({"model": {key: name, "groups": 8}}).model, key) == name
        with pytest.raises(ConfigError, match=f"model.{key} = 'nosuch' is invalid; valid: "):
            C.from_dict({"model": {key: "nosuch"}})
    assert set(C.POOLING_BLOCKS) <= set(BLOCKS.names())


@pytest.mark.parametrize("name", ["airbench", "resnet9", "preact_resnet18", "vgg"])
def test_gelu_replaces_every_relu_and_nothing_else(name):
    """model.activation = "gelu": each ReLU of the stem, stages and dense layers becomes a GELU;
    the parameters (names, shapes, initial values) stay those of the ReLU network."""
    torch.manual_seed(0)
    relu = build_model(model_config(name), 10)
    torch.manual_seed(0)
    gelu = build_model(model_config(name, activation="gelu"), 10)
    kinds = lambda m: [type(x) for x in m.modules()]  # noqa: E731
    assert kinds(relu).count(nn.ReLU) > 0 and kinds(gelu).count(nn.ReLU) == 0
    assert kinds(gelu).count(nn.GELU) == kinds(relu).count(nn.ReLU)
    a, b = relu.state_dict(), gelu.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 32, 32)
    relu.eval(), gelu.eval()
    assert not torch.allclose(relu(x), gelu(x))


def test_logit_scale_multiplies_the_logits_and_leaves_the_features():
    torch.manual_seed(0)
    plain = build_model(model_config("resnet9"), 10).eval()
    torch.manual_seed(0)
    scaled = build_model(model_config("resnet9", logit_scale=1 / 9), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.features(x), scaled.features(x))
        assert torch.allclose(scaled(x), plain(x) / 9, atol=1e-6)
    assert C.config_hash(C.from_dict({"model": {"logit_scale": 1.0, "activation": "relu"}})) == \
        C.config_hash(C.from_dict({}))  # the defaults keep every existing run's hash


# The VGG as it was built before the model anatomy (a flat nn.Sequential), written here as the
# reference: the anatomy must build the same parameters in the same order and compute the same.
def reference_vgg(cfg: ModelConfig, num_classes: int) -> nn.Sequential:
    bn, blocks, c = cfg.norm == "batch", [], 3
    for width, rate in zip(cfg.widths, cfg.dropout or (0.0,) * len(cfg.widths)):
        layers = []
        for i in range(cfg.convs_per_block):
            layers += [nn.Conv2d(c if i == 0 else width, width, 3, padding=1, bias=not bn)]
            layers += [nn.BatchNorm2d(width)] if bn else []
            layers += [nn.ReLU()]
        layers.append(nn.MaxPool2d(2) if cfg.downsample == "max" else nn.AvgPool2d(2))
        if rate:
            layers.insert(len(layers) - 3 if cfg.dropout_before_bn and bn else len(layers), nn.Dropout(rate))
        blocks.append(nn.Sequential(*layers))
        c = width
    head, d = [nn.Flatten()], c * (32 // 2 ** len(cfg.widths)) ** 2
    for width in cfg.dense:
        head += [nn.Linear(d, width), nn.ReLU()] + ([nn.Dropout(cfg.dense_dropout)] if cfg.dense_dropout else [])
        d = width
    model = nn.Sequential(*blocks, *head, nn.Linear(d, num_classes))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize("keys", [{}, {"norm": "batch", "dropout": [0.2, 0.3, 0.4], "dense_dropout": 0.5},
                                  {"norm": "batch", "dropout": [0.1, 0.2, 0.3], "dropout_before_bn": True,
                                   "downsample": "avg"}])
def test_the_tutorial_vgg_initialises_and_trains_as_before_the_anatomy(keys):
    cfg = model_config(**keys)
    torch.manual_seed(3)
    new = build_model(cfg, 10)
    torch.manual_seed(3)
    old = reference_vgg(cfg, 10)
    new_params, old_params = list(new.parameters()), list(old.parameters())
    assert [p.shape for p in new_params] == [p.shape for p in old_params]
    assert all(torch.equal(a, b) for a, b in zip(new_params, old_params))
    x = torch.randn(8, 3, 32, 32)
    for model in (new, old):   # two SGD steps in train mode: dropout masks and BatchNorm statistics
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(5)
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(x), torch.arange(8) % 10)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_and_norm_runs_forward_and_backward(name, norm, size):
    cfg = model_config(name, norm=norm)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=7, image_size=size)
    x = torch.randn(2, 3, size, size)
    z = model.features(x)
    assert z.shape == (2, model.feature_dim)
    out = model.head(z)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)  # a whitening stem is frozen
    n, other = count_parameters(model), build_model(cfg, 7, 96 - size)  # the other of 32 and 64 px
    if cfg.head == "gap":  # global average pooling: the parameters do not depend on the image size
        assert n == count_parameters(other) and model.feature_dim == other.feature_dim
    else:                  # flatten: twice the side, 4x the features into the first dense layer
        assert model.feature_dim * (96 - size) ** 2 == other.feature_dim * size ** 2
        assert n - count_parameters(other) == (model.feature_dim - other.feature_dim) * cfg.dense[0]
    if norm in ("group", "layer", "instance"):  # each has a scale and a shift per channel, as BatchNorm
        assert n == count_parameters(build_model(model_config(name, norm="batch"), 7, size))


def test_features_then_head_is_forward():
    model = build_model(model_config("vgg_residual", norm="group", groups=8), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.head(model.features(x)), model(x))
        assert model.features(x).shape == (3, 128)


def test_the_resnetify_steps_change_what_they_name():
    shapes = {}
    for name in ("vgg_bn", "vgg_gap", "vgg_strided", "vgg_residual", "vgg_residual4", "vgg_plain4"):
        model = build_model(model_config(name), 10)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        shapes[name] = ([tuple(c.weight.shape) for c in convs], [c.stride[0] for c in convs],
                        sum(isinstance(m, nn.MaxPool2d) for m in model.modules()), model.feature_dim)
    assert shapes["vgg_gap"][0] == shapes["vgg_bn"][0] and shapes["vgg_gap"][3] == 128  # the head only
    assert shapes["vgg_bn"][3] == 128 * 4 * 4
    assert shapes["vgg_strided"][0] == shapes["vgg_gap"][0] and shapes["vgg_strided"][2] == 0
    assert shapes["vgg_strided"][1] == [1, 1, 2, 1, 2, 1]
    # skips add a 1x1 projection where the width changes (the image's 3 channels too), nothing else
    assert [s for s in shapes["vgg_residual"][0] if s[-1] == 3] == shapes["vgg_strided"][0]
    assert sorted(s for s in shapes["vgg_residual"][0] if s[-1] == 1) == [(32, 3, 1, 1), (64, 32, 1, 1), (128, 64, 1, 1)]
    assert shapes["vgg_residual4"][3] == shapes["vgg_plain4"][3] == 256


def test_a_pooled_stage_runs_one_conv_at_its_input_resolution_and_the_rest_pooled():
    # resnet9's layout: every stage conv -> max pool -> norm -> ReLU -> residual unit(s)
    model = build_model(model_config("resnet9", stem_width=16, widths=(24, 48), blocks_per_stage=2), 10)
    sizes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o, name=name: sizes.__setitem__(name, (i[0].shape[-1], o.shape[1])))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # stem at 32; stage 0: its first conv at 32, its 2 units x 2 convs at 16; stage 1: 16, then 8
    assert sorted(sizes.values(), key=lambda v: (-v[0], v[1])) == \
        [(32, 16), (32, 24)] + [(16, 24)] * 4 + [(16, 48)] + [(8, 48)] * 4
    first = model.stages[0]
    assert [type(m).__name__ for m in first[:4]] == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    assert not any(isinstance(m, nn.MaxPool2d) for m in first[4:].modules())  # no second pool
    unit = first[4]
    x = torch.randn(2, 24, 16, 16)
    unit.eval()
    assert torch.allclose(unit(x), x + unit.branch(x))  # the identity skip, nothing after the sum


def test_squeeze_excite_adds_its_bottleneck_per_stage():
    plain, se = (count_parameters(build_model(model_config("vgg_residual", se=r), 10)) for r in (0, 8))
    assert se - plain == sum(2 * w * (w // 8) + w // 8 + w for w in (32, 64, 128))


def test_patchify_stem_embeds_non_overlapping_patches():
    model = build_model(model_config("vgg_residual", stem="patchify", patch=2, stem_width=32), 10)
    assert model.stem[0].kernel_size == model.stem[0].stride == (2, 2)
    assert model.stages(model.stem(torch.randn(1, 3, 32, 32))).shape[-1] == 4  # 32 / 2, then halved twice


@pytest.mark.parametrize("keys, message", [
    ({"norm": "batchy"}, "model.norm = 'batchy' is invalid; valid: none, batch, group, layer, instance"),
    ({"stem": "big"}, "model.stem = 'big' is invalid; valid: none, conv, patchify, whiten"),
    ({"stem": "whiten", "patch": 2, "stem_width": 25}, "model.stem_width = 25: a whitening stem has two filters"),
    ({"stem": "whiten", "patch": 2, "stem_width": 26}, "give an even width up to 24, or 0 for all of them"),
    ({"block": "bottleneck"}, "model.block = 'bottleneck' is invalid; valid: plain, basic, preact, pooled, airbench"),
    ({"block": "pooled", "downsample": "stride"}, "model.block = 'pooled' downsamples with a pool .* not 'stride'"),
    ({"norm": "group", "groups": 24}, r"model.groups = 24 does not divide the width\(s\) \[32, 64, 128\]; use a common divisor"),
    ({"se": 64}, "model.se = 64 .* is larger than the width 32"),
    ({"batchnorm": True}, 'model.batchnorm was renamed: write model.norm = "batch"'),
    ({"activation": "tanh"}, "model.activation = 'tanh' is invalid; valid: relu, gelu"),
    ({"logit_scale": 0.0}, "model.logit_scale = 0.0 must be"),
    ({"whiten_init": True, "stem": "whiten", "patch": 2}, "model.whiten_init .* model.stem = 'whiten' already is one"),
    ({"whiten_init": True, "widths": (33, 64, 128)}, "the first conv has 33 filters; .* even count up to 54"),
    ({"whiten_init": True, "widths": (64, 64, 128)}, "the first conv has 64 filters; .* even count up to 54"),
    ({"whiten_init": True, "stem": "patchify", "patch": 2, "stem_width": 32}, "the first conv has 32 filters; .* up to 24"),
])
def test_bad_model_keys_are_one_line(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        model_config(**keys)
    assert "\n" not in str(err.value)


def test_a_whitening_stem_whitens_the_patches_it_was_fitted_to_and_keeps_both_signs():
    from cifarlab.models.layers import Whiten, fit_whitening
    torch.manual_seed(0)
    mix = torch.randn(3, 3) * torch.tensor([4.0, 1.0, 0.3])   # strongly correlated, unequal channels
    images = (torch.einsum("ij,njhw->nihw", mix, torch.randn(400, 3, 12, 12)) * 10).cumsum(-1)  # and neighbours
    model = build_model(model_config("resnet9", stem="whiten", patch=2, stem_width=0, widths=(16, 32)), 10)
    whiten = model.stem[0]
    assert isinstance(whiten, Whiten) and whiten.conv.out_channels == 24 and not whiten.conv.weight.requires_grad
    fit_whitening(model, images)
    with torch.no_grad():
        out = whiten(images).transpose(0, 1).reshape(24, -1)   # every output pixel a sample of 24 responses
    half = out[:12]
    assert torch.allclose(out[12:] - whiten.conv.bias[12:, None], -(half - whiten.conv.bias[:12, None]), atol=1e-3)
    cov = torch.cov(half.double())
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.02), cov.diag()
    assert half.mean(1).abs().max() < 1e-3                      # centred before the bias trains
    narrow = build_model(model_config("resnet9", stem="whiten", patch=2, stem_width=8, widths=(16, 32)), 10)
    fit_whitening(narrow, images)                              # the top 4 directions, both signs
    assert torch.allclose(narrow.stem[0].conv.weight[:4], whiten.conv.weight[:4], atol=1e-5) or \
        torch.allclose(narrow.stem[0].conv.weight[:4].abs(), whiten.conv.weight[:4].abs(), atol=1e-5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)   # 31 px after the stem, then pooled stages


def test_whiten_init_starts_the_first_conv_as_trainable_whitening_filters_and_leaves_the_rest():
    from cifarlab.models.layers import fit_whitening
    torch.manual_seed(0)
    mix = torch.randn(3, 3) * torch.tensor([4.0, 1.0, 0.3])
    images = (torch.einsum("ij,njhw->nihw", mix, torch.randn(300, 3, 12, 12)) * 10).cumsum(-1)
    torch.manual_seed(1)
    he = build_model(model_config("vgg"), 10)
    torch.manual_seed(1)
    model = build_model(model_config("vgg", whiten_init=True), 10)
    fit_whitening(model, images, first=True)
    first = model.stages[0][0]
    assert isinstance(first, nn.Conv2d) and first.weight.requires_grad and first.out_channels == 32
    with torch.no_grad():   # the conv's valid (unpadded) outputs: 16 directions, then the same negated
        out = nn.functional.conv2d(images, first.weight).transpose(0, 1).reshape(32, -1).double()
    assert torch.allclose(out[16:], -out[:16], atol=1e-6)
    cov = torch.cov(out[:16])
    assert torch.allclose(cov.diag(), torch.ones(16, dtype=torch.float64), atol=0.03), cov.diag()
    assert (cov - torch.diag(cov.diag())).abs().max() < 0.03    # decorrelated
    assert (out[:16] + first.bias[:16, None].double()).mean(1).abs().max() < 1e-3   # centred by its bias
    rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("stages.0.0.")]
    assert all(torch.equal(p, dict(he.named_parameters())[n]) for n, p in rest)   # only the first conv moved
    assert not torch.equal(first.weight, he.stages[0][0].weight)


def test_the_airbench_preset_has_its_layers_in_airbench94s_order():
    model = build_model(model_config("airbench"), 10)
    first = model.stages[0]
    kinds = [type(m).__name__ for m in first]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert model.stem[0].conv.out_channels == 24 and [s[0].out_channels for s in model.stages] == [64, 256, 256]
    x = torch.randn(2, 3, 32, 32)
    assert model.stages(model.stem(x)).shape[-1] == 3   # 31 px after the 2 x 2 stem, then 15, 7, 3
    assert model(x).shape == (2, 10)


def test_dirac_init_makes_the_first_c_in_filters_of_each_3x3_conv_the_identity():
    he = build_model(model_config("airbench"), 10)
    torch.manual_seed(0)
    model = build_model(model_config("airbench", init="dirac"), 10)
    convs = [m for m in model.stages.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    x = torch.randn(2, 64, 8, 8)
    second = model.stages[0][4]                      # 64 -> 64: every filter the identity
    assert torch.allclose(nn.functional.conv2d(x, second.weight, padding=1), x)
    first = model.stages[1][0]                       # 64 -> 256: the first 64 pass the input, the rest are He's
    out = nn.functional.conv2d(x, first.weight, padding=1)
    assert torch.allclose(out[:, :64], x) and not torch.allclose(out[:, 64:128], x)
    assert first.weight[64:].abs().max() <= (6 / (64 * 9)) ** 0.5
    assert not torch.allclose(he.stages[0][4].weight, second.weight)


def test_a_patch_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ConfigError, match="model.patch = 3 does not divide the image size 32"):
        build_model(model_config(stem="patchify", patch=3), 10)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="model.name = 'resnet999' is invalid; valid: .*resnet18.*vgg"):
        model_config("resnet999")


def test_he_uniform_bounds():
    model = build_model(ModelConfig(), 10)
    conv = model.stages[0][0]
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


def test_translate_tta_averages_six_views_each_shifted_one_pixel_with_reflected_borders():
    from cifarlab.evaluate import predict, shift
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    down_right = shift(x, 1, 1)
    assert down_right.shape == x.shape
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])        # content moved by one pixel
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])            # the top row reflects row 1
    up_left = shift(x, -1, -1)
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:]) and torch.equal(up_left[..., -1, :-1], x[..., -2, 1:])
    assert torch.equal(shift(x, 0, 0), x)
    model = build_model(ModelConfig(widths=(8, 16), dense=(16,)), 10).eval()
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        views = [v for m in (x, x.flip(3)) for v in (m, shift(m, 1, 1), shift(m, -1, -1))]
        expected = sum(model(v) for v in views) / 6
        assert torch.allclose(predict(model, x, "flip-translate"), expected, atol=1e-5)
        assert not torch.allclose(predict(model, x, "flip-translate"), predict(model, x, "flip"), atol=1e-4)


def test_group_norm_on_a_channels_last_cpu_tensor_computes_what_nn_group_norm_does():
    from cifarlab.models.layers import ContiguousGroupNorm
    torch.manual_seed(0)
    ours, plain = ContiguousGroupNorm(4, 16), nn.GroupNorm(4, 16)
    nn.init.normal_(ours.weight)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, plain(x), atol=1e-5)
    y.square().sum().backward()
    assert x.grad is not None and ours.weight.grad is not None


@pytest.mark.parametrize("block", BLOCKS.choices())
def test_every_block_halves_a_max_pooled_stage_once(block):
    """A stage of any block pools once with downsample = "max": at its end, or inside for the
    blocks that pool after their first conv (config.POOLING_BLOCKS)."""
    from cifarlab.models.layers import stage
    cfg = model_config("vgg", block=block, norm="batch", downsample="max", widths=(8, 8))
    out = stage(0, 8, 8, cfg, 0.0).eval()(torch.randn(2, 8, 8, 8))
    assert out.shape == (2, 8, 4, 4)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in stage(0, 8, 8, cfg, 0.0).modules())
    assert pools == 1


def test_norm_momentum_sets_every_batchnorms_running_statistics_weight():
    norms = lambda m: [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]  # noqa: E731
    plain, fast = build_model(model_config("airbench"), 10), build_model(model_config("airbench", norm_momentum=0.4), 10)
    assert norms(plain) and all(n.momentum == 0.1 for n in norms(plain))
    assert len(norms(fast)) == len(norms(plain)) and all(n.momentum == 0.4 for n in norms(fast))
    n, seen = norms(fast)[0], []
    n.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().float()))
    fast.train()(torch.randn(4, 3, 32, 32))
    # one batch from the initial statistics (mean 0): the running mean is 0.4 of the batch's mean
    assert torch.allclose(n.running_mean, 0.4 * seen[0].mean((0, 2, 3)), atol=1e-6)
    assert not torch.allclose(n.running_mean, torch.zeros_like(n.running_mean))


def test_head_bias_false_drops_the_classifiers_bias_only():
    with_bias, without = build_model(model_config("airbench"), 10), build_model(model_config("airbench", head_bias=False), 10)
    assert count_parameters(with_bias) - count_parameters(without) == 10
    assert [n for n, _ in with_bias.named_parameters() if n not in dict(without.named_parameters())] == ["classifier.0.bias"]


def test_gmp_head_takes_each_channels_maximum_where_gap_takes_its_mean():
    gap, gmp = build_model(model_config("airbench"), 10), build_model(model_config("airbench", head="gmp"), 10)
    assert count_parameters(gap) == count_parameters(gmp)
    x = torch.randn(2, 256, 3, 3)
    assert torch.equal(gmp.pool(x), x.amax((2, 3))) and torch.allclose(gap.pool(x), x.mean((2, 3)))
    assert gmp(torch.randn(2, 3, 32, 32)).shape == (2, 10)
