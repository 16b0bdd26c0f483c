"""Organization commands: `tessera org export-task` builds a task package from a torch model."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import click

from app.output import emit, json_option, print_fields
from vault.errors import ModelRefused


def _parse_shape(text: str) -> list[int]:
    try:
        shape = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of sizes like 7 or 20,3") from None
    if not shape or any(d < 1 for d in shape):
        raise click.BadParameter(f"{text!r} is not a list of positive sizes")
    return shape


def _parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arg")
        try:
            kwargs[key] = json.loads(value)  # 7, [64, 64], 0.5, "text"
        except ValueError:
            kwargs[key] = value
    return kwargs


def load_factory(spec: str) -> Any:
    """The callable named by ``MODULE:FACTORY`` (imported with importlib)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:FACTORY", param_hint="MODEL")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="MODEL"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise click.BadParameter(f"{module_name!r} has no callable {attr!r}", param_hint="MODEL")
    return factory


@click.group("org")
def org_group() -> None:
    """Organization side: build task packages for federated training."""


@org_group.command("export-task")
@click.argument("model")
@click.option("--recipe", required=True, help="Feature recipe name from the vault catalogue.")
@click.option(
    "--loss", type=click.Choice(["cross_entropy", "mse", "bce"]), required=True, help="Loss."
)
@click.option("--features-shape", required=True, help="Per-example feature shape: 7 or 20,3.")
@click.option("--label", "label_field", required=True, help="Label field of the recipe.")
@click.option(
    "--label-dtype",
    type=click.Choice(["int64", "float32"]),
    help="Label type (default: int64 for cross_entropy, else float32).",
)
@click.option("--classes", type=int, help="Number of classes (cross_entropy).")
@click.option("--batch-size", type=click.IntRange(1, 65_536), default=64, show_default=True)
@click.option("--arg", "args", multiple=True, help="KEY=VALUE passed to FACTORY (JSON values).")
@click.option("--name", help="Task name (default: the model class name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@json_option
def export_task_cmd(
    model: str,
    recipe: str,
    loss: str,
    features_shape: str,
    label_field: str,
    label_dtype: str | None,
    classes: int | None,
    batch_size: int,
    args: tuple[str, ...],
    name: str | None,
    out: Path,
    as_json: bool,
) -> None:
    """Export MODEL (MODULE:FACTORY returning a torch nn.Module) as a task package."""
    from agents.package import write_package

    try:
        from agents.sdk.export import build_task
    except ImportError as exc:
        raise click.ClickException(
            f"the SDK needs torch (pip install 'tessera[org]'): {exc}"
        ) from None
    module = load_factory(model)(**_parse_args(args))
    label_dtype = label_dtype or ("int64" if loss == "cross_entropy" else "float32")
    try:
        built = build_task(
            module, loss, recipe, _parse_shape(features_shape), label_field, label_dtype,
            classes, batch_size, name,
        )  # fmt: skip
    except ModelRefused as exc:
        raise ModelRefused(f"{model}: {exc}") from None
    address = write_package(out, built.task, built.model_bytes, built.params)
    data = {
        "package": str(out),
        "address": address,
        "name": built.task["name"],
        "parameters": built.report.parameter_count,
        "flops_per_example": built.report.flops_per_example,
        "opset": built.report.opset,
        "parity_max_rel_error": max(built.parity.values()),
        "parity": built.parity,
    }

    def human() -> None:
        print_fields({k: v for k, v in data.items() if k != "parity"})

    emit(data, as_json, human)


def _attach_exchange_commands() -> None:
    """The organization's exchange commands (init, post, status, model) live beside."""
    from app.commands.org_exchange import org_init, org_model, org_post, org_status

    for command in (org_init, org_post, org_status, org_model):
        org_group.add_command(command)


_attach_exchange_commands()
