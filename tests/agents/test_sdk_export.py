"""The SDK exports each reference model with per-example gradients that match torch autograd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from agents.package import read_package, write_package  # noqa: E402
from agents.sdk import export, factored, models  # noqa: E402
from agents.sdk.export import PARITY_RTOL, build_task, export_task  # noqa: E402
from agents.validator import validate_package  # noqa: E402
from vault.errors import ModelRefused  # noqa: E402

BATCH = 8
# name -> (factory, loss, features shape, label dtype, classes)
CASES = {
    "logistic": (lambda: models.logistic_regression(5, 3), "cross_entropy", [5], "int64", 3),
    "logistic_bce": (lambda: models.logistic_regression(5, 1), "bce", [5], "float32", None),
    "mlp_classifier": (
        lambda: models.mlp_classifier(5, (8, 8), 4),
        "cross_entropy",
        [5],
        "int64",
        4,
    ),
    "mlp_regressor": (lambda: models.mlp_regressor(5, (8,)), "mse", [5], "float32", None),
    "conv1d": (lambda: models.conv1d_classifier(3, 2, 4, 3), "cross_entropy", [12, 3], "int64", 2),
    # a Linear applied at each of 6 time steps, then one over the flattened window: T = 6
    "per_position": (
        lambda: torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(24, 2)
        ),
        "cross_entropy",
        [6, 3],
        "int64",
        2,
    ),
}
# which parameters each case exports as factors (grad: outer) and at how many positions
FACTORED = {
    "logistic": {"weight": 1},
    "logistic_bce": {"weight": 1},
    "mlp_classifier": {"0.weight": 1, "2.weight": 1, "4.weight": 1},
    "mlp_regressor": {"0.weight": 1, "2.weight": 1},
    "conv1d": {},
    "per_position": {"0.weight": 6, "3.weight": 1},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """Each reference model exported once: name -> (module, ExportedTask, package path)."""
    torch.manual_seed(0)
    out = {}
    folder = tmp_path_factory.mktemp("packages")
    for name, (factory, loss, shape, label_dtype, classes) in CASES.items():
        module = factory()
        built = build_task(module, loss, "test.recipe", shape, "y", label_dtype, classes, BATCH)
        path = folder / f"{name}.tpkg"
        write_package(path, built.task, built.model_bytes, built.params)
        out[name] = (module, built, path)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_parity_with_torch_autograd(exported, name: str):
    _, built, _ = exported[name]
    names = [p["name"] for p in built.task["params"]]

    assert set(built.parity) == {"losses", *(f"grad.{n}" for n in names)}
    assert max(built.parity.values()) < PARITY_RTOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_weights_are_exported_as_factors(exported, name: str):
    _, built, _ = exported[name]

    outer = {p["name"]: p["positions"] for p in built.task["params"] if p.get("grad") == "outer"}
    outputs = {o["name"]: o["shape"] for o in built.report.outputs}

    assert outer == FACTORED[name]
    for n, positions in outer.items():
        rows, cols = next(p["shape"] for p in built.task["params"] if p["name"] == n)
        steps = [positions] if positions > 1 else []
        assert outputs[f"act.{n}"] == [BATCH, *steps, cols]
        assert outputs[f"sig.{n}"] == [BATCH, *steps, rows]
        assert f"grad.{n}" not in outputs


@pytest.mark.parametrize("name", sorted(CASES))
def test_package_is_accepted_by_the_vault_validator(exported, name: str):
    module, built, path = exported[name]

    report = validate_package(path)
    package = read_package(path)

    assert report.parameter_count == sum(p.numel() for p in module.parameters())
    assert package.task["batch_size"] == BATCH
    assert package.task["flops_per_example"] == report.flops_per_example > 0
    assert package.task["created_by"].startswith("tessera-sdk ")
    for n, p in module.named_parameters():
        np.testing.assert_array_equal(package.params[n], p.detach().numpy())


def test_masked_rows_are_zero_even_with_nan_features(exported):
    module, built, _ = exported["mlp_classifier"]
    session = ort.InferenceSession(built.model_bytes, providers=["CPUExecutionProvider"])
    feeds = {n: a for n, a in built.params.items()}
    x = np.random.default_rng(1).standard_normal((BATCH, 5)).astype(np.float32)
    x[3:] = np.nan
    mask = np.zeros(BATCH, dtype=np.float32)
    mask[:3] = 1
    feeds.update(features=x, labels=np.zeros(BATCH, dtype=np.int64), mask=mask)

    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds), strict=True))

    for out in outputs.values():  # factors included: padded rows are zero, never NaN
        assert np.all(out[3:] == 0)
        assert np.all(np.isfinite(out[:3]))
    # the first row's gradient is the one torch computes for that example alone
    params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    logits = torch.func.functional_call(module, params, (torch.from_numpy(x[:1]),))
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.int64))
    grads = torch.autograd.grad(loss, list(params.values()))
    np.testing.assert_allclose(outputs["losses"][0], loss.item(), rtol=1e-5)
    for n, want in zip(params, grads, strict=True):
        got = export._per_example_grad(outputs, n)
        np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-4, atol=1e-6)


def test_flops_of_logistic_regression(exported):
    _, built, _ = exported["logistic"]

    # forward x @ W.T only: 5 x 3 multiply-adds, 2 FLOPs each. The weight is exported as
    # factors, so the per-example outer product is not in the graph (the vault's one matmul
    # per batch replaces it)
    assert built.task["flops_per_example"] == 2 * 5 * 3


def test_flops_of_conv1d_include_the_weight_gradients(exported):
    _, built, _ = exported["conv1d"]

    # dense export: per-example weight gradients are part of the graph's work
    assert built.task["flops_per_example"] > 2 * sum(
        int(np.prod(p["shape"])) for p in built.task["params"]
    )


def test_export_is_deterministic(tmp_path: Path):
    module = models.logistic_regression(4, 2)
    a = export_task(module, "cross_entropy", "r", [4], "y", "int64", 2, 4, tmp_path / "a.tpkg")
    b = export_task(module, "cross_entropy", "r", [4], "y", "int64", 2, 4, tmp_path / "b.tpkg")

    assert a == b
    assert (tmp_path / "a.tpkg").read_bytes() == (tmp_path / "b.tpkg").read_bytes()


def test_failed_parity_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = export._reference_loss
    monkeypatch.setattr(export, "_reference_loss", lambda *a: 2 * real(*a))
    out = tmp_path / "bad.tpkg"

    with pytest.raises(ModelRefused, match=r"parity check failed: \S+ differs .* relative error"):
        export_task(
            models.logistic_regression(4, 2), "cross_entropy", "r", [4], "y", "int64", 2, 4, out
        )

    assert not out.exists()


def test_factored_export_with_wrong_signals_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = factored.factored_step

    def skewed(*args):
        step = real(*args)

        def wrong(*inputs):
            out = list(step(*inputs))  # losses, act.weight, sig.weight, grad.bias
            out[2] = out[2] * 1.01
            return tuple(out)

        return wrong

    monkeypatch.setattr(factored, "factored_step", skewed)
    out = tmp_path / "bad.tpkg"

    with pytest.raises(ModelRefused, match=r"parity check failed: grad\.weight differs"):
        export_task(
            models.logistic_regression(4, 2), "cross_entropy", "r", [4], "y", "int64", 2, 4, out
        )

    assert not out.exists()


def test_a_shared_linear_layer_is_exported_dense():
    class Shared(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.inner(torch.relu(self.inner(x)))))

    built = build_task(Shared(), "cross_entropy", "r", [4], "y", "int64", 2, 4)

    assert all("grad" not in p for p in built.task["params"])
    assert max(built.parity.values()) < PARITY_RTOL


@pytest.mark.parametrize(
    ("factory", "loss", "classes", "reason"),
    [
        (lambda: models.mlp_regressor(4, (4,)), "cross_entropy", 3, r"needs \[batch, 3\] logits"),
        (lambda: models.logistic_regression(4, 3), "mse", None, "one output per example"),
        (lambda: models.logistic_regression(4, 3), "hinge", None, "loss must be one of"),
    ],
)
def test_mismatched_model_and_loss_refused_before_tracing(factory, loss, classes, reason):
    label_dtype = "int64" if loss == "cross_entropy" else "float32"
    with pytest.raises(ModelRefused, match=reason):
        build_task(factory(), loss, "r", [4], "y", label_dtype, classes, 4)


def test_callers_module_is_left_alone():
    module = models.mlp_classifier(4, (4,), 2)
    module.train()
    before = [p.detach().clone() for p in module.parameters()]

    build_task(module, "cross_entropy", "r", [4], "y", "int64", 2, 2)

    assert module.training
    for old, new in zip(before, module.parameters(), strict=True):
        assert torch.equal(old, new)


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [(1, 0, 1, 1), (2, 1, 2, 2)])
@pytest.mark.parametrize("dims", [1, 2])
def test_convolution_backward_decomposition(stride, padding, dilation, groups, dims):
    aten = torch.ops.aten
    x = torch.randn((3, 4) + (11,) * dims, dtype=torch.float64, requires_grad=True)
    w = torch.randn((6, 4 // groups) + (3,) * dims, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    args = ([stride] * dims, [padding] * dims, [dilation] * dims, False, [0] * dims, groups)
    y = aten.convolution(x, w, b, *args)
    grad_out = torch.randn_like(y)

    want = torch.autograd.grad(y, (x, w, b), grad_out)
    got = export._convolution_backward(grad_out, x.detach(), w.detach(), [6], *args, [True] * 3)

    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)


def test_cli_export_task(tmp_path: Path, tessera):
    out = tmp_path / "cli.tpkg"

    result = tessera(
        "org", "export-task", "agents.sdk.models:logistic_regression",
        "--arg", "n_features=3", "--arg", "n_classes=2",
        "--recipe", "test.recipe", "--loss", "cross_entropy", "--features-shape", "3",
        "--label", "y", "--classes", "2", "--batch-size", "4", "--out", str(out), "--json",
    )  # fmt: skip

    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["address"] == read_package(out).address
    assert data["parity_max_rel_error"] < PARITY_RTOL


@pytest.mark.parametrize(
    ("spec", "extra", "code", "message"),
    [
        ("agents.sdk.models", [], 2, "MODULE:FACTORY"),
        ("agents.sdk.nowhere:f", [], 2, "cannot import"),
        ("agents.sdk.models:nothing", [], 2, "no callable"),
        ("agents.sdk.models:mlp_regressor", ["--arg", "n_features=3"], 1, "logits"),
    ],
)
def test_cli_export_task_errors(tmp_path: Path, tessera, spec, extra, code, message):
    result = tessera(
        "org", "export-task", spec, *extra, "--recipe", "r", "--loss", "cross_entropy",
        "--features-shape", "3", "--label", "y", "--classes", "2", "--out", str(tmp_path / "x"),
    )  # fmt: skip

    assert result.code == code
    assert message in result.err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["mlp_classifier", "per_position"])
def test_factored_export_trains_like_the_dense_export(
    exported, monkeypatch: pytest.MonkeyPatch, name: str
):
    from agents import dpsgd
    from agents.runner import task_io
    from agents.sandbox_worker import LocalGraph
    from agents.training_step import DPStep

    module, split, _ = exported[name]
    _, loss, shape, label_dtype, classes = CASES[name]
    monkeypatch.setattr(factored, "factorable_linears", lambda *args: None)
    dense = build_task(module, loss, "test.recipe", shape, "y", label_dtype, classes, BATCH)
    rng = np.random.default_rng(3)
    features = rng.standard_normal((50, *shape)).astype(np.float32)
    labels = rng.integers(0, classes, 50).astype(np.int64)

    updated = []
    for built in (dense, split):
        inputs, outputs = task_io(built.task)
        graph = LocalGraph(built.model_bytes, inputs, outputs)
        params = [p.copy() for p in built.params.values()]
        chosen = np.arange(1, 21)  # 20 rows: three calls of 8, the last one padded
        with DPStep(graph, built.task, features, labels, 0.5, 1e-9, 20.0, dpsgd.SGD(1.0)) as step:
            step.step(params, chosen, dpsgd.SecureRandom(), probe=True)
        updated.append(params)

    assert all("grad" not in p for p in dense.task["params"])
    for a, b in zip(*updated, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
