"""The layer table: output shapes, parameters, in-place mutation, default journey stages."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from convlens.cli import main
from convlens.models import build_layer_table, stage_layers, wrap_module


def _small() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=1),  # 33 -> floor((33 + 2 - 5) / 2) + 1 = 16
        nn.ReLU(),
        nn.MaxPool2d(2),                          # 16 -> 8
        nn.Conv2d(8, 4, 3, padding=1),            # 8 -> 8
        nn.BatchNorm2d(4),
        nn.AvgPool2d(3, stride=2),                # 8 -> floor((8 - 3) / 2) + 1 = 3
        nn.Conv2d(4, 6, (3, 1)),                  # 3x3 -> 1x3
        nn.Flatten(),                             # 6 * 1 * 3 = 18
        nn.Linear(18, 5),
    )


@pytest.fixture
def cli_model(reuse_builtin):
    """Let `convlens layers` reuse the session's built-in model (its table is already computed)."""
    import convlens.cli.cmd_layers as cmd

    return reuse_builtin(cmd)


@pytest.fixture(scope="module")
def resnet18_small():
    """torchvision's resnet18 (random weights) at 64x64: the same module tree, a cheap forward."""
    from torchvision.models import resnet18

    return wrap_module(resnet18(weights=None), input_size=(3, 64, 64), name="resnet18",
                       class_names=[str(i) for i in range(1000)])


def test_shapes_equal_hand_arithmetic():
    table = build_layer_table(_small(), torch.zeros(1, 3, 33, 33))
    shapes = {r.name: r.output_shape for r in table}
    assert shapes == {
        "0": (8, 16, 16), "1": (8, 16, 16), "2": (8, 8, 8), "3": (4, 8, 8), "4": (4, 8, 8),
        "5": (4, 3, 3), "6": (6, 1, 3), "7": (18,), "8": (5,),
    }
    assert table.input_shape == (3, 33, 33)
    assert [r.is_conv for r in table] == [True, False, False, True, False, False, True, False, False]
    assert [r.is_pool for r in table] == [False, False, True, False, False, True, False, False, False]
    assert table["6"].is_spatial and not table["7"].is_spatial
    with pytest.raises(KeyError):
        table["nope"]


def test_params_per_module_and_total():
    net = _small()
    table = build_layer_table(net, torch.zeros(1, 3, 33, 33))
    modules = dict(net.named_modules())
    for r in table:
        assert r.params == sum(p.numel() for p in modules[r.name].parameters())
    # by hand: conv 3*8*25+8, conv 8*4*9+4, bn 4+4, conv 4*6*3+6, linear 18*5+5
    assert table["0"].params == 608 and table["3"].params == 292 and table["4"].params == 8
    assert table["6"].params == 78 and table["8"].params == 95
    assert table.total_params == 608 + 292 + 8 + 78 + 95 == sum(p.numel() for p in net.parameters())
    net[0].weight.requires_grad_(False)
    assert build_layer_table(net, torch.zeros(1, 3, 33, 33)).trainable_params == table.total_params - 600
    assert "Total params: 1,081" in str(table)


def test_containers_come_before_children_in_execution_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)            # defined first, runs last
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.head(self.body(x))

    table = build_layer_table(Net(), torch.zeros(1, 1, 8, 8))
    assert table.names == ["body", "body.0", "body.1", "body.2", "head"]
    assert table["body"].output_shape == (4,) and not table["body"].is_leaf and table["body.0"].depth == 1


def test_inplace_mutation_is_detected_in_resnet(resnet18_small):
    table = resnet18_small.layers()
    mutated = table.inplace_mutated
    # BasicBlock: out = bn2(conv2(...)); out += identity  -> bn2's output changes in place
    for block in ("layer1.0", "layer1.1", "layer2.0", "layer4.1"):
        assert f"{block}.bn2" in mutated
        assert f"{block}.conv1" not in mutated and f"{block}.conv2" not in mutated
    assert "bn1" in mutated  # followed by ReLU(inplace=True)
    assert "conv1" not in mutated and "fc" not in mutated
    assert build_layer_table(_small(), torch.zeros(1, 3, 33, 33)).inplace_mutated == frozenset()


def test_stage_layers(builtin_model, resnet18_small):
    assert builtin_model.stage_layers() == ["conv_stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head"]
    assert resnet18_small.stage_layers() == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    small = wrap_module(_small(), input_size=(3, 33, 33), class_names=list("abcde"))
    assert small.stage_layers() == ["0", "2", "3", "5", "6"]  # every conv and pooling layer
    assert stage_layers(small.layers()) == small.stage_layers()


def test_builtin_layer_table(builtin_model):
    table = builtin_model.layers()
    assert len(table) >= 50
    # every module is a row or hidden: hidden ones do nothing (Identity placeholders, and the
    # drop_path of blocks without a skip connection, which the forward never calls)
    assert len(table) + len(table.hidden) == sum(1 for n, _ in builtin_model.module.named_modules() if n)
    modules = dict(builtin_model.module.named_modules())
    assert all(r.type == "Identity" or (r.output_shape is None and r.params == 0) for r in table.hidden)
    assert all(r.type != "Identity" and r.output_shape is not None for r in table)
    unused = [r.name for r in table.hidden if r.output_shape is None]
    assert 0 < len(unused) < 10
    for name in unused:
        assert name.endswith(".drop_path") and not modules[name.rsplit(".", 1)[0]].has_skip, name
    assert table["blocks.0.0.se"].type == "Identity"  # hidden rows are still found by name
    assert table["conv_stem"].output_shape == (32, 112, 112)
    assert table["blocks.6"].output_shape == (320, 7, 7)
    assert table["conv_head"].output_shape == (1280, 7, 7)
    assert table["global_pool"].output_shape == (1280,) and table["classifier"].output_shape == (1000,)
    assert table.total_params == sum(p.numel() for p in builtin_model.module.parameters())
    text = str(table)
    assert "Identity" not in text.split("Non-trainable")[0] and "drop_path" not in text
    assert "(None, 32, 112, 112)" in text and "modules that do nothing here are not listed: Identity" in text


def test_cli_layers_json(capsys, cli_model):
    assert main(["layers", "--json"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert len(rows) >= 50
    for r in rows:
        assert {"name", "type", "output_shape", "params"} <= set(r)
        assert r["type"] != "Identity"  # modules that do nothing are not listed
        assert isinstance(r["output_shape"], list) and all(isinstance(v, int) and v > 0 for v in r["output_shape"])
        assert isinstance(r["params"], int) and r["params"] >= 0 and r["trainable"] == r["params"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["conv_stem"]["type"].startswith("Conv2d")  # timm's Conv2dSame (TF "same" padding)
    assert by_name["conv_stem"]["output_shape"] == [32, 112, 112] and by_name["conv_stem"]["params"] == 864
    assert by_name["classifier"]["params"] == 1280 * 1000 + 1000
    assert [r["name"] for r in rows][:2] == ["conv_stem", "bn1"]

    assert main(["layers", "--json", "--leaves"]) == 0
    leaves = json.loads(capsys.readouterr().out)
    assert 0 < len(leaves) < len(rows) and all(r["leaf"] for r in leaves)


def test_cli_layers_human_table(capsys, cli_model):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "conv_stem" in out and "blocks.6" in out and "Total params: 4,652,008" in out


# -- the course's Keras models written as specs ---------------------------------------

def _spec_model(spec: str, size=(1, 28, 28), classes=10):
    from convlens.models.arch import build_arch

    return wrap_module(build_arch(spec, size, classes), input_size=size, name=spec,
                       class_names=[str(i) for i in range(classes)])


def test_course_dense_model_as_a_spec_has_the_keras_count():
    # Keras: Flatten, Dense(128, relu), Dense(10) on 28x28x1 -> 100,480 + 1,290 = 101,770
    table = _spec_model("fc128").layers()
    assert table.total_params == 101_770 == table.trainable_params
    assert table["head.fc1"].output_shape == (128,) and table["head.fc1"].params == 784 * 128 + 128
    assert table["head.classifier"].params == 128 * 10 + 10


def test_course_two_conv_model_as_a_spec_has_the_keras_shapes_and_count():
    # Conv2D(64, 3) valid -> MaxPool 2 -> Conv2D(64, 3) valid -> MaxPool 2 -> Flatten -> Dense 128 -> Dense 10
    table = _spec_model("conv64v-pool-conv64v-pool-fc128").layers()
    shapes = {r.name: r.output_shape for r in table}
    assert [shapes[n][1] for n in ("features.conv1", "features.pool1", "features.conv2", "features.pool2")] \
        == [26, 13, 11, 5]  # the course's 28 -> 26 -> 13 -> 11 -> 5
    assert shapes["head.flatten"] == (1600,)
    assert table["features.conv1"].params == 640 and table["features.conv2"].params == 36_928
    assert table["head.fc1"].params == 204_928
    assert table.total_params == 243_786


def test_same_padding_keeps_the_size_and_activations_replace_relu():
    from convlens.models.arch import build_arch

    same = _spec_model("conv64-pool-conv64-pool-fc128").layers()
    assert same["features.conv1"].output_shape == (64, 28, 28) and same["features.pool2"].output_shape == (64, 7, 7)
    net = build_arch("conv8-tanh-pool-conv8k5v-bn-sigmoid-fc16-relu-fc8-tanh", (1, 28, 28), 3)
    assert isinstance(net.features.conv1.act, nn.Tanh) and isinstance(net.features.conv2.act, nn.Sigmoid)
    assert isinstance(net.features.conv2.bn, nn.BatchNorm2d) and net.features.conv2.conv.padding == (0, 0)
    assert isinstance(net.head.fc1.act, nn.ReLU) and isinstance(net.head.fc2.act, nn.Tanh)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    # an activation token after something that is not a conv/fc is a layer of its own
    alone = build_arch("conv8-pool-sigmoid-fc4", (1, 12, 12), 2)
    assert isinstance(alone.features.act1, nn.Sigmoid) and isinstance(alone.features.conv1.act, nn.ReLU)
    # the same spec builds the same state-dict names (a run's weights load back)
    assert set(build_arch("conv8-tanh-fc4", (1, 8, 8), 2).state_dict()) \
        == set(build_arch("conv8-fc4", (1, 8, 8), 2).state_dict())


@pytest.mark.parametrize("spec, size, message", [
    ("conv8k5v-conv8k5v", (1, 6, 6), "'conv8k5v' at position 2 shrinks the 6x6 input to nothing; use a smaller kernel"),
    ("conv8v-pool-conv8v-pool-pool", (1, 10, 10), "'pool' at position 5 shrinks"),
    ("conv8-softmax", (1, 8, 8), "unknown token 'softmax'.*relu/sigmoid/tanh"),
    ("conv8vv", (1, 8, 8), "unknown token 'conv8vv'.*did you mean: conv32v"),
])
def test_spec_errors_name_the_token(spec, size, message):
    from convlens.errors import SpecError
    from convlens.models.arch import build_arch

    with pytest.raises(SpecError, match=message) as exc:
        build_arch(spec, size, 2)
    assert exc.value.param == "arch"


def test_summary_is_keras_like_with_batch_none_and_trainable_counts():
    text = str(_spec_model("conv64v-pool-conv64v-pool-fc128").layers())
    assert "Input: (None, 1, 28, 28)" in text
    assert "(None, 64, 26, 26)" in text and "(None, 64, 5, 5)" in text and "(None, 1600)" in text
    assert "Total params: 243,786\nTrainable params: 243,786\nNon-trainable params: 0" in text
    assert "Frozen" not in text and "frozen" not in text


def test_frozen_summary_says_what_is_frozen():
    lm = _spec_model("conv8-pool-conv16-pool-fc32")
    for p in lm.module.features.parameters():
        p.requires_grad_(False)
    lm.module.head.fc1.fc.bias.requires_grad_(False)
    table = build_layer_table(lm.module, lm.example_input())
    feats = table["features"].params
    assert table.non_trainable_params == feats + 32 and table.trainable_params == table.total_params - feats - 32
    assert table["features"].trainable == 0 and table["features.conv1"].frozen == table["features.conv1"].params
    assert table.frozen == ["features"]  # the outermost fully frozen module, not each child
    text = str(table)
    assert f"Non-trainable params: {feats + 32:,}" in text and "Frozen: features" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("head.fc1 "))
    assert row.endswith("32 frozen")  # partly frozen: says how much
    assert table["features"].to_dict()["trainable"] == 0


def test_identity_and_never_called_modules_are_hidden():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.skip = nn.Identity()
            self.unused = nn.ReLU()
            self.aux = nn.Linear(3, 3)  # never called, but has parameters: it stays

        def forward(self, x):
            return self.skip(self.conv(x)).mean((2, 3))

    table = build_layer_table(Net(), torch.zeros(1, 1, 6, 6))
    assert table.names == ["conv", "aux"] and [r.name for r in table.hidden] == ["skip", "unused"]
    assert table["skip"].output_shape == (2, 4, 4) and table["aux"].output_shape is None
    assert "not called" in str(table) and table.total_params == 20 + 12


def test_default_journey_of_small_cnns_descends_into_blocks():
    # the course's one-block CNN: its conv and its pool, not only the block's output
    assert _spec_model("conv32-pool-fc64").stage_layers() == ["features.conv1", "features.pool1"]
    assert _spec_model("conv64v-pool-conv64v-pool-fc128").stage_layers() == [
        "features.conv1", "features.pool1", "features.conv2", "features.pool2"]
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2)),
                           nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(4 * 11 * 11, 2))
    lm = wrap_module(nested, input_size=(1, 28, 28), class_names=["a", "b"])
    assert lm.stage_layers() == ["0.0", "0.2", "1"]  # a block of one conv is shown by its output
