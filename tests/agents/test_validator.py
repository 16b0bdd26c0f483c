"""The model validator refuses every hostile class before execution and accepts good models."""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import click
import onnx
import pytest

from agents.onnx_runtime import runtime_limits
from agents.validator import (
    ALLOWED_OPS,
    Limits,
    check_task_io,
    validate_model,
    validate_package,
)
from tests.fixtures import hostile_models as hm
from vault.errors import ModelRefused

# every hostile fixture and the reason it must be refused for
EXPECTED_REASONS = {
    "external_initializer": "external data (location '/etc/passwd')",
    "external_relative_location": "external data (location '../../../../root",
    "external_entries_without_flag": "external data",
    "external_constant_attribute": "Constant uses external data",
    "external_tensors_attribute": "Relu uses external data",
    "external_in_subgraph": "then_branch/Constant uses external data",
    "external_sparse_initializer": "external data",
    "custom_domain_op": "non-standard domain 'evil.corp'",
    "custom_domain_import_only": "non-standard domain 'evil.corp'",
    "custom_domain_node_only": "operator RunShell uses the non-standard domain",
    "microsoft_op": "non-standard domain 'com.microsoft'",
    "onnx_ml_op": "non-standard domain 'ai.onnx.ml'",
    "too_new_opset": "opset 99 is newer than the runtime",
    "local_function": "model-local functions",
    "loop_huge_trip_count": "unbounded loop operator Loop",
    "scan_op": "unbounded loop operator Scan",
    "disallowed_op": "operator RandomNormalLike is not on the allow-list",
    "if_op": "operator If is not on the allow-list",
    "oversized_tensor": "declares 17179869184 bytes",
    "oversized_total": "bytes in all",
    "raw_data_mismatch": "8 bytes of data, its dims declare 16",
    "typed_data_mismatch": "3 values, its dims declare 4",
    "string_tensor": "refused element type",
    "huge_input_dim": "input 'x' has a dimension of 1073741824",
    "dynamic_input": "input 'x' has a dynamic shape",
    "memory_bomb_constant_of_shape": "intermediate tensor 'big' would take",
    "compute_bomb": "multiply-adds per batch",
    "two_standard_opsets": "exactly one opset",
    "fails_checker": "fails the ONNX checker",
    "fails_shape_inference": "Incompatible dimensions",
    "sequence_input": "SequenceAt is not on the allow-list",
    "random_bytes": "not an ONNX model",
    "empty_file": "empty file",
    "text_file": "not an ONNX model",
    "no_graph": "no graph",
}


@pytest.fixture
def no_file_access(monkeypatch: pytest.MonkeyPatch):
    """Fail the test if Python code opens any file while the validator runs."""
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    runtime_limits()  # the runtime probe is ours and cached; warm it before spying
    monkeypatch.setattr(builtins, "open", spy)
    yield opened
    assert opened == []


def test_every_hostile_fixture_has_an_expected_reason():
    assert set(EXPECTED_REASONS) == set(hm.HOSTILE_MODELS)


@pytest.mark.parametrize("name", sorted(hm.HOSTILE_MODELS))
def test_hostile_model_refused_for_its_reason(name: str, no_file_access: list[str]):
    # prepare
    data = hm.HOSTILE_MODELS[name]()
    # execute
    with pytest.raises(ModelRefused) as refused:
        validate_model(data)
    # assert: one line naming the problem
    message = str(refused.value)
    assert EXPECTED_REASONS[name] in message
    assert "\n" not in message


def test_good_model_accepted_with_report():
    report = validate_model(hm.linear_task_model(batch=4, n_features=3))

    assert report.opset == hm.OPSET
    assert report.operators == {
        "Greater": 1,
        "MatMul": 1,
        "Mul": 3,
        "Sub": 1,
        "Unsqueeze": 2,
        "Where": 2,
    }
    assert report.parameter_count == 3
    assert report.batch_size == 4
    # one MatMul [4, 3] x [3]: 12 multiply-adds per batch, 2 FLOPs each, over 4 examples
    assert report.flops_per_example == 6
    assert [i["name"] for i in report.inputs] == ["w", "features", "labels", "mask"]
    assert report.outputs[1] == {"name": "grad.w", "shape": [4, 3], "dtype": "float32"}
    assert json.loads(json.dumps(report.to_dict()))["operators"]["MatMul"] == 1


def test_hostile_names_cannot_reach_the_terminal():
    # an operator named with an ANSI escape and a megabyte of text
    model = onnx.load_model_from_string(hm.disallowed_op())
    model.graph.node[0].op_type = "\x1b[2J\x1b]0;pwned\x07" + "A" * 1_000_000

    with pytest.raises(ModelRefused) as refused:
        validate_model(model.SerializeToString())

    message = str(refused.value)
    assert "\x1b" not in message and "\x07" not in message
    assert len(message) < 400


def test_limits_are_configurable():
    with pytest.raises(ModelRefused, match="model is over the limit"):
        validate_model(hm.linear_task_model(), Limits(max_model_bytes=100))
    with pytest.raises(ModelRefused, match="multiply-adds"):
        validate_model(hm.linear_task_model(), Limits(max_macs=5))


def test_allow_list_excludes_loops_branches_and_randomness():
    assert not {"Loop", "Scan", "If", "RandomNormal", "Dropout", "Multinomial"} & ALLOWED_OPS


def test_runtime_limits_are_what_onnxruntime_loads():
    max_opset, max_ir = runtime_limits()

    assert 17 <= max_opset <= onnx.defs.onnx_opset_version()
    assert 8 <= max_ir <= onnx.IR_VERSION


def test_external_data_refused_before_the_checker_runs(monkeypatch: pytest.MonkeyPatch):
    # the checker resolves external paths; it must never see such a model
    def boom(*args, **kwargs):
        raise AssertionError("checker reached")

    monkeypatch.setattr(onnx.checker, "check_model", boom)
    with pytest.raises(ModelRefused, match="external data"):
        validate_model(hm.external_initializer())


# -------------------------------------------------------------------------------- packages


def test_good_package_accepted(tmp_path: Path):
    path = tmp_path / "linear.tpkg"
    hm.write_linear_package(path)

    report = validate_package(path)

    assert report.parameter_count == 3


def test_tampered_package_refused(tmp_path: Path):
    path = tmp_path / "linear.tpkg"
    hm.write_linear_package(path)
    bad = tmp_path / "tampered.tpkg"
    bad.write_bytes(hm.tampered_package(path.read_bytes()))

    with pytest.raises(ModelRefused, match="package hash mismatch for model.onnx"):
        validate_package(bad)


def test_package_whose_model_disagrees_with_task_json_refused(tmp_path: Path):
    path = tmp_path / "liar.tpkg"
    # task.json says 5 features and batch 8; the model has 3 and 4
    hm.write_linear_package(
        path,
        params=[{"name": "w", "shape": [5], "dtype": "float32"}],
        features={"recipe": "test.linear", "shape": [5], "dtype": "float32"},
    )

    with pytest.raises(ModelRefused, match="model inputs do not match task.json"):
        validate_package(path)


def test_check_task_io_names_dtype_and_opset():
    report = validate_model(hm.linear_task_model())
    task = hm.linear_task()

    check_task_io(report, task)
    with pytest.raises(ModelRefused, match="labels"):
        check_task_io(report, {**task, "label": {"field": "y", "dtype": "int64", "classes": 2}})
    with pytest.raises(ModelRefused, match="opset"):
        check_task_io(report, {**task, "opset": hm.OPSET + 1})


def _with_hidden_compute(model_bytes: bytes, size: int = 256, chain: int = 8) -> bytes:
    """The model plus a chain of [size, size] MatMuls whose result is multiplied into the loss
    by zero: the outputs stay honest, the work is ``chain * size**3`` multiply-adds per batch."""
    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    side = onnx.helper.make_tensor("side", onnx.TensorProto.INT64, [2], [size] * 2)
    graph.initializer.append(side)
    nodes = [onnx.helper.make_node("Expand", ["two", "side"], ["m0"])]
    for i in range(chain):
        nodes.append(onnx.helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]))
    nodes += [
        onnx.helper.make_node("ReduceSum", [f"m{chain}"], ["hidden"], keepdims=0),
        onnx.helper.make_node("Mul", ["hidden", "zero"], ["nothing"]),
    ]
    losses = next(n for n in graph.node if "losses" in n.output)
    losses.output[0] = "honest_losses"
    nodes.append(onnx.helper.make_node("Add", ["honest_losses", "nothing"], ["losses"]))
    graph.node.extend(nodes)
    return model.SerializeToString()


def test_package_understating_its_cost_refused(tmp_path: Path):
    from agents.package import write_package

    heavy = _with_hidden_compute(hm.linear_task_model())
    estimate = validate_model(heavy).flops_per_example
    path = tmp_path / "cheap-looking.tpkg"
    # declares the cost of the honest linear model, hides 8 x 256^3 multiply-adds per batch
    write_package(path, hm.linear_task(), heavy, {"w": [0.0, 0.0, 0.0]})

    with pytest.raises(ModelRefused) as refused:
        validate_package(path)

    assert estimate == 2 * (4 * 3 + 8 * 256**3) // 4
    assert str(refused.value) == (
        f"task.json declares 12 FLOPs per example, the model needs at least {estimate}"
    )


@pytest.mark.parametrize(("declared", "accepted"), [(6, True), (3, True), (2, False), (0, False)])
def test_declared_flops_may_be_at_most_half_the_estimate(declared: int, accepted: bool):
    report = validate_model(hm.linear_task_model())  # estimate: 6 FLOPs per example
    task = {**hm.linear_task(), "flops_per_example": declared}

    if accepted:  # half of the estimate is a multiply-add count: still honest
        check_task_io(report, task)
    else:
        with pytest.raises(ModelRefused, match=f"declares {declared} FLOPs per example"):
            check_task_io(report, task)


def test_package_with_hostile_model_and_honest_hashes_refused(tmp_path: Path):
    from agents.package import write_package

    path = tmp_path / "evil.tpkg"
    params = {"w": [0.0, 0.0, 0.0]}
    write_package(path, hm.linear_task(), hm.external_initializer(), params)

    with pytest.raises(ModelRefused, match="external data"):
        validate_package(path)


# ------------------------------------------------------------------------------------- CLI


@pytest.fixture
def task_cli(monkeypatch: pytest.MonkeyPatch):
    """Make `tessera task validate` reachable even before app/commands/task.py exists."""
    from app.cli import COMMANDS

    spec = importlib.util.find_spec("app.commands.task")
    if spec is not None:
        module = importlib.import_module("app.commands.task")
        if "validate" in getattr(module, "task_group", click.Group()).commands:
            return
    from app.commands.task_validate import validate_cmd

    group = click.Group("task")
    group.add_command(validate_cmd, "validate")
    stub = types.ModuleType("tests_task_stub")
    stub.__spec__ = importlib.machinery.ModuleSpec("tests_task_stub", None)
    stub.task_group = group
    monkeypatch.setitem(sys.modules, "tests_task_stub", stub)
    monkeypatch.setitem(COMMANDS, "task", "tests_task_stub:task_group")


def test_cli_validate_package_ok(tmp_path: Path, tessera, task_cli):
    path = tmp_path / "linear.tpkg"
    hm.write_linear_package(path)

    result = tessera("task", "validate", str(path), "--json")

    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["accepted"] is True
    assert data["task"]["name"] == "linear"
    assert data["flops_per_example"] == 6


def test_cli_validate_bare_onnx_human_summary(tmp_path: Path, tessera, task_cli):
    path = tmp_path / "model.onnx"
    path.write_bytes(hm.linear_task_model())

    result = tessera("task", "validate", str(path))

    assert result.code == 0, result.err
    assert "accepted" in result.out
    assert "MatMul x1" in result.out


@pytest.mark.parametrize("name", ["external_initializer", "loop_huge_trip_count", "empty_file"])
def test_cli_validate_refuses_with_exit_1(tmp_path: Path, tessera, task_cli, name: str):
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(hm.HOSTILE_MODELS[name]())

    result = tessera("task", "validate", str(path))

    assert result.code == 1
    assert result.err.startswith(f"error: {path}: ")
    assert EXPECTED_REASONS[name] in result.err


def test_cli_validate_tampered_package(tmp_path: Path, tessera, task_cli):
    good = tmp_path / "good.tpkg"
    hm.write_linear_package(good)
    bad = tmp_path / "bad.tpkg"
    bad.write_bytes(hm.tampered_package(good.read_bytes()))

    result = tessera("task", "validate", str(bad))

    assert result.code == 1
    assert result.err.strip() == f"error: {bad}: package hash mismatch for model.onnx"


def test_validator_does_not_import_torch():
    code = "import sys, agents.validator, agents.package; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
