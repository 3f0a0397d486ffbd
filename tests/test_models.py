"""Model zoo: every entry builds, trains a step, round-trips through its config, loads local
weights safely, and fails clearly (and fast) when hub weights are not there."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ferwild import models as M
from ferwild.models import (
    MODEL_REGISTRY,
    FERModel,
    IncompatibleWeightsError,
    ModelEntry,
    PretrainedWeightsUnavailable,
    UnknownModelError,
    UnsafeCheckpointError,
    count_parameters,
    create_model,
    list_models,
    model_from_config,
)
from ferwild.preprocessing import Preprocessing

# (name, image size for the test). vit_b16/resnet50 run at their default 224 (about 2 s each on 2 cores).
CASES = [
    ("cnn_small", 48),
    ("fer_vgg", 48),
    ("fer_vgg_tiny", 48),
    ("vit_tiny", 32),
    ("resnet18", 32),
    ("resnet50", None),
    ("vit_b16", None),
    ("timm:resnet10t", 32),
]
FAST = ["cnn_small", "fer_vgg", "fer_vgg_tiny", "vit_tiny", "resnet18", "timm:resnet10t"]
SIZES = dict(CASES)


def _build(name: str, **kw) -> FERModel:
    torch.manual_seed(0)
    return create_model(name, 6, image_size=SIZES.get(name), **kw)


def _batch(model: FERModel, n: int = 2) -> torch.Tensor:
    s = model.preprocessing.input_size
    g = torch.Generator().manual_seed(1)
    return model.preprocessing.normalize(torch.rand(n, 3, s, s, generator=g))


def _backbone_equal(a: FERModel, b: FERModel) -> bool:
    sa, sb = a.backbone.state_dict(), b.backbone.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, empty caches: HF_HUB_OFFLINE=1, HF_HOME and TORCH_HOME in tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_required_entries():
    assert {"vit_b16", "resnet50", "resnet18", "vit_tiny", "cnn_small"} <= set(MODEL_REGISTRY)
    for name, entry in MODEL_REGISTRY.items():
        assert entry.name == name and entry.description
        assert entry.pretrained_source == "none" or entry.pretrained_source.startswith(("hf:", "torchvision:"))


def test_list_models_counts_parameters():
    t0 = time.perf_counter()
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == set(MODEL_REGISTRY)
    assert time.perf_counter() - t0 < 20
    for r in rows.values():
        assert set(r) >= {"name", "input_size", "params", "pretrained_source", "description"}
        assert isinstance(r["params"], int) and r["params"] > 0
    assert 50_000 < rows["cnn_small"]["params"] < 200_000
    assert 85_000_000 < rows["vit_b16"]["params"] < 87_000_000
    assert 23_000_000 < rows["resnet50"]["params"] < 24_000_000
    assert rows["vit_b16"]["pretrained_source"] == "hf:google/vit-base-patch16-224-in21k"
    assert rows["resnet50"]["pretrained_source"] == "torchvision:ResNet50_Weights.IMAGENET1K_V2"
    # the count is the real model's (backbone + a 6-way head)
    assert rows["cnn_small"]["params"] == count_parameters(create_model("cnn_small", 6))


def test_preprocessing_per_entry():
    vit = MODEL_REGISTRY["vit_b16"]
    assert (vit.default_input_size, vit.mean, vit.std) == (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for name in ("resnet50", "resnet18"):
        e = MODEL_REGISTRY[name]
        assert e.default_input_size == 224
        assert e.mean == pytest.approx((0.485, 0.456, 0.406)) and e.std == pytest.approx((0.229, 0.224, 0.225))
    assert MODEL_REGISTRY["vit_tiny"].default_input_size == 64
    assert 48 <= MODEL_REGISTRY["cnn_small"].default_input_size <= 64
    # the built model carries it, with the image_size override
    m = create_model("resnet18", 6, image_size=64)
    assert m.preprocessing == Preprocessing(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert create_model("vit_tiny", 6).preprocessing.input_size == 64
    # timm: from its pretrained_cfg
    t = create_model("timm:vit_tiny_patch16_224", 6, image_size=32)
    assert t.preprocessing.input_size == 32 and t.preprocessing.mean == (0.5, 0.5, 0.5)
    assert create_model("timm:resnet10t", 6).preprocessing.input_size == 176  # timm's train size


def test_preprocessing_dict_round_trip_and_normalize():
    p = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    d = json.loads(json.dumps(p.to_dict()))
    assert Preprocessing.from_dict(d) == p
    x = torch.full((1, 3, 2, 2), 0.485)
    assert torch.allclose(p.normalize(x)[0, 0], torch.zeros(2, 2), atol=1e-6)
    with pytest.raises(ValueError):
        Preprocessing(0, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError):
        Preprocessing(32, (0.5, 0.5), (0.5,) * 3)


# ----------------------------------------------------------------------------- build / train step


@pytest.mark.parametrize("name,size", CASES, ids=[c[0] for c in CASES])
def test_build_forward_features_and_a_training_step(name, size):
    torch.manual_seed(0)
    model = create_model(name, 6, pretrained="none", image_size=size)
    assert isinstance(model, FERModel) and model.name == name and model.num_classes == 6
    assert model.pretrained_report is None
    assert all(p.requires_grad for p in model.parameters())
    x = _batch(model)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 6)
    feats = model.features(x)
    assert feats.shape == (2, model.num_features) and model.num_features == model.head.in_features
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 6

    before = model.head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 5]))
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, model.head.weight)


def test_vit_image_size_sets_position_embeddings():
    m = create_model("vit_tiny", 6, image_size=32)
    assert m.backbone.vit.embeddings.position_embeddings.shape == (1, 1 + (32 // 8) ** 2, 192)
    with pytest.raises(ValueError, match="patch"):
        create_model("vit_tiny", 6, image_size=36)


def test_fer_vgg_is_tied_to_sizes_it_can_pool():
    m = create_model("fer_vgg", 7)
    assert m.preprocessing.input_size == 48 and 1.5e6 < count_parameters(m) < 4e6
    assert create_model("fer_vgg", 7, image_size=64)(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("fer_vgg", 7, image_size=40)
    tiny = create_model("fer_vgg_tiny", 7)
    # the demo's model: the same architecture at a fraction of the shipped net's size
    assert type(tiny.backbone) is type(m.backbone) and 2e5 < count_parameters(tiny) < count_parameters(m) / 4


def test_flip_tta_averages_the_mirror_in_eval_mode_only():
    torch.manual_seed(0)
    m = create_model("cnn_small", 6).eval()
    x = _batch(m, 3)
    with torch.no_grad():
        plain, mirrored = m(x).softmax(1), m(x.flip(-1)).softmax(1)
        m.set_tta("flip")
        torch.testing.assert_close(m(x).exp(), (plain + mirrored) / 2)
        torch.testing.assert_close(m(x.flip(-1)), m(x))  # mirror-invariant by construction
        m.train()  # training forwards never augment: plain logits
        torch.testing.assert_close(m(x), m.head(m.features(x)))
    assert m.config()["tta"] == "flip" and model_from_config(m.config()).tta == "flip"
    assert "tta" not in create_model("cnn_small", 6).config()  # other runs' configs are unchanged
    with pytest.raises(ValueError, match="tta"):
        m.set_tta("tencrop")


def test_temperature_divides_the_eval_output_after_tta_and_travels_in_the_config():
    torch.manual_seed(0)
    m = create_model("cnn_small", 6).eval().set_tta("flip")
    x = _batch(m, 3)
    with torch.no_grad():
        uncalibrated = m(x)
        m.set_temperature(2.5)
        torch.testing.assert_close(m(x), uncalibrated / 2.5)   # what fit_temperature fits on
        assert torch.equal(m(x).argmax(1), uncalibrated.argmax(1))
        m.train()
        torch.testing.assert_close(m(x), m.head(m.features(x)))  # training never scales
    rebuilt = model_from_config(m.config())
    assert m.config()["temperature"] == 2.5 and rebuilt.temperature == 2.5
    assert "temperature" not in create_model("cnn_small", 6).config()
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            m.set_temperature(bad)


def test_input_must_have_three_channels():
    m = create_model("cnn_small", 6)
    with pytest.raises(ValueError, match="3 channels"):
        m(torch.zeros(2, 1, 48, 48))


# ----------------------------------------------------------------------------- config round trip


@pytest.mark.parametrize("name", FAST)
def test_config_round_trip_gives_identical_outputs(name, tmp_path):
    labels = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise"}
    model = _build(name, id2label=labels).eval()
    cfg = json.loads(json.dumps(model.config()))  # JSON-able, as checkpoints store it
    assert cfg["name"] == name and cfg["num_classes"] == 6
    assert cfg["image_size"] == model.preprocessing.input_size
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))

    torch.manual_seed(123)  # a different random init, overwritten by the load
    clone = model_from_config(cfg).eval()
    assert clone.id2label == labels and clone.preprocessing == model.preprocessing
    clone.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    x = _batch(model)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
        assert torch.equal(model.features(x), clone.features(x))


def test_id2label_travels_and_is_validated():
    m = create_model("cnn_small", 3, id2label={0: "a", 1: "b", 2: "c"})
    cfg = json.loads(json.dumps(m.config()))
    assert cfg["id2label"] == {"0": "a", "1": "b", "2": "c"}
    assert model_from_config(cfg).id2label == {0: "a", 1: "b", 2: "c"}
    assert create_model("cnn_small", 2).id2label == {0: "class_0", 1: "class_1"}
    with pytest.raises(ValueError, match="id2label"):
        create_model("cnn_small", 3, id2label={0: "a", 1: "b"})


def test_bad_names_and_class_counts():
    with pytest.raises(UnknownModelError) as err:
        create_model("vit_huge_nonexistent", 6)
    msg = str(err.value)
    for name in MODEL_REGISTRY:
        assert name in msg
    assert "timm:<" in msg
    with pytest.raises(UnknownModelError, match="timm has no model"):
        create_model("timm:not_a_real_model_xyz", 6)
    for bad in (1, 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            create_model("cnn_small", bad)


def test_freeze_backbone_leaves_only_the_head_trainable():
    m = create_model("resnet18", 6, image_size=32)
    head = m.head.weight.numel() + m.head.bias.numel()
    assert count_parameters(m, trainable_only=True) == count_parameters(m) > head
    m.freeze_backbone()
    assert count_parameters(m, trainable_only=True) == head
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    m.train()
    assert m.training and m.head.training and not m.backbone.training  # BN statistics stay fixed
    m.freeze_backbone(False)
    assert all(p.requires_grad for p in m.parameters()) and m.backbone.training


def test_register_model(monkeypatch):
    monkeypatch.setattr(M, "MODEL_REGISTRY", dict(MODEL_REGISTRY))
    monkeypatch.setattr(M, "_BUILDERS", dict(M._BUILDERS))
    entry = ModelEntry("toy", "a toy", 16, (0.5,) * 3, (0.5,) * 3, "none")

    def build(*, image_size):  # no num_features attribute: found by a dry run
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    M.register_model(entry, build)
    m = M.create_model("toy", 3)
    assert m.num_features == 4 and m(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert "toy" in {r["name"] for r in M.list_models()}
    with pytest.raises(ValueError, match="already registered"):
        M.register_model(entry, build)


# ----------------------------------------------------------------------------- pretrained: local paths


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "cnn_small"])
@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_pretrained_from_local_file(name, fmt, tmp_path):
    src = _build(name)
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(src.state_dict(), str(path))  # a whole ferwild model: backbone.* and head.*
    else:
        torch.save({"state_dict": src.backbone.state_dict(), "epoch": 3}, path)  # a wrapped backbone state dict
    torch.manual_seed(99)
    model = create_model(name, 6, pretrained=str(path), image_size=SIZES[name])
    assert _backbone_equal(model, src)
    assert not torch.equal(model.head.weight, src.head.weight)  # the head is new
    assert model.pretrained_report["loaded"] > 0 and model.pretrained_report["missing"] == []


def test_pretrained_from_torchvision_state_dict_ignores_its_classifier(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)  # 1000-way fc, as torchvision ships it
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("resnet18", 6, pretrained=tmp_path / "resnet18.pth", image_size=32)
    ref = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in ref.items())
    assert model.head.weight.shape == (6, 512)


def _legacy_hf_key(key: str) -> str:
    """Current transformers ViT key -> the layout of the published google/vit-* checkpoints."""
    key = re.sub(r"^layers\.", "encoder.layer.", key)
    for new, old in (("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
                     ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
                     ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
        key = key.replace(new, old)
    return key


def test_pretrained_vit_from_hf_layouts_and_other_image_size(tmp_path):
    src = create_model("vit_tiny", 6)  # 64 px: 8x8 position grid
    vit_sd = src.backbone.vit.state_dict()
    # 1) an HF model folder (save_pretrained), loaded at the same size
    src.backbone.vit.save_pretrained(tmp_path / "hf")
    same = create_model("vit_tiny", 6, pretrained=tmp_path / "hf")
    assert _backbone_equal(same, src)
    # 2) the published checkpoints' legacy key names (encoder.layer.N.attention.attention.query, ...)
    legacy = {_legacy_hf_key(k): v.clone() for k, v in vit_sd.items()}
    assert "encoder.layer.0.attention.attention.query.weight" in legacy
    legacy["pooler.dense.weight"] = torch.zeros(192, 192)  # the in21k checkpoints carry a pooler: ignored
    save_file(legacy, str(tmp_path / "legacy.safetensors"))
    again = create_model("vit_tiny", 6, pretrained=tmp_path / "legacy.safetensors")
    assert _backbone_equal(again, src)
    # 3) at another image size: position embeddings interpolated, everything else as is
    small = create_model("vit_tiny", 6, pretrained=tmp_path / "hf", image_size=32)
    got = small.backbone.vit.state_dict()
    pos = got["embeddings.position_embeddings"]
    assert pos.shape == (1, 17, 192)
    assert torch.equal(pos[:, 0], vit_sd["embeddings.position_embeddings"][:, 0])  # [CLS] kept
    assert all(torch.equal(got[k], v) for k, v in vit_sd.items() if k != "embeddings.position_embeddings")
    assert small(_batch(small)).shape == (2, 6)


def test_timm_pretrained_from_local_file(tmp_path):
    src = _build("timm:resnet10t")
    save_file(src.backbone.state_dict(), str(tmp_path / "r10t.safetensors"))
    model = create_model("timm:resnet10t", 6, pretrained=tmp_path / "r10t.safetensors", image_size=32)
    assert _backbone_equal(model, src)


class _Evil:
    """Unpickling this would create a file: it must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused(tmp_path):
    src = _build("cnn_small")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": src.state_dict(), "payload": _Evil(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True") as err:
        create_model("cnn_small", 6, pretrained=path)
    assert str(path) in str(err.value) and "--pretrained none" in str(err.value)
    assert isinstance(err.value, PretrainedWeightsUnavailable)
    assert not marker.exists()


def test_incompatible_weights_raise(tmp_path):
    save_file(_build("cnn_small").state_dict(), str(tmp_path / "cnn.safetensors"))
    with pytest.raises(IncompatibleWeightsError, match="none of the"):
        create_model("resnet18", 6, pretrained=tmp_path / "cnn.safetensors", image_size=32)
    with pytest.raises(IncompatibleWeightsError):
        create_model("vit_tiny", 6, pretrained=tmp_path / "cnn.safetensors")
    # same key names, other shapes: resnet18 weights into resnet50
    save_file(_build("resnet18").state_dict(), str(tmp_path / "r18.safetensors"))
    with pytest.raises(IncompatibleWeightsError, match="shapes"):
        create_model("resnet50", 6, pretrained=tmp_path / "r18.safetensors")
    with pytest.raises(PretrainedWeightsUnavailable, match="no such file"):
        create_model("cnn_small", 6, pretrained=tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- pretrained: hub


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,weights", [
    ("vit_b16", "google/vit-base-patch16-224-in21k"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    ("timm:resnet10t", "timm/resnet10t"),
])
def test_hub_offline_and_not_cached_fails_fast_and_clearly(name, weights, offline):
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        create_model(name, 6, pretrained="hub")
    assert time.perf_counter() - t0 < 15
    msg = str(err.value)
    assert weights in msg
    assert "--pretrained none" in msg
    assert "HF_HUB_OFFLINE" in msg
    assert str(offline / ("torch" if name.startswith("resnet") else "hf")) in msg  # where it looked


def test_hub_for_an_entry_without_hub_weights(offline):
    with pytest.raises(PretrainedWeightsUnavailable, match="no hub weights"):
        create_model("vit_tiny", 6, pretrained="hub")


def test_hub_uses_the_torch_cache_when_the_file_is_there(offline):
    torch.manual_seed(0)
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(net.state_dict(), cache / "resnet18-f37072fd.pth")
    model = create_model("resnet18", 6, pretrained="hub", image_size=32)
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight)
    assert model.pretrained_report["source"].endswith("resnet18-f37072fd.pth")


def test_hf_source_uses_the_hub_cache_offline(offline):
    src = create_model("vit_tiny", 6)
    snap = offline / "hf" / "hub" / "models--ferwild-test--tiny-vit" / "snapshots" / ("a" * 40)
    src.backbone.vit.save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    model = create_model("vit_tiny", 6, pretrained="hf:ferwild-test/tiny-vit")
    assert _backbone_equal(model, src)
    with pytest.raises(PretrainedWeightsUnavailable, match="ferwild-test/absent"):
        create_model("vit_tiny", 6, pretrained="hf:ferwild-test/absent")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, ferwild.models; print('transformers' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_position_embedding_resize_is_exact_at_the_same_grid():
    pos = torch.randn(1, 1 + 16, 8)
    assert torch.allclose(M._resize_pos_embed(pos, 4), pos, atol=1e-5)
    assert M._resize_pos_embed(pos, 6).shape == (1, 1 + 36, 8)
    assert math.isqrt(M._resize_pos_embed(pos, 2).shape[1] - 1) == 2
