"""`tessera task validate PATH`: check a task package or bare ONNX model before anything runs it.

The `task` group (app/commands/task.py) adds this command; it lives apart so the validator has a
face without the runner.
"""

from __future__ import annotations

from pathlib import Path

import click

from app.output import emit, json_option, print_fields
from vault.errors import ModelRefused


def _operators(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


@click.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def validate_cmd(path: Path, as_json: bool) -> None:
    """Validate a .tpkg task package or a bare .onnx model; exit 1 with the reason if refused."""
    from agents.package import MAX_TOTAL_BYTES, read_package
    from agents.validator import check_task_io, validate_model

    task = package = None
    try:
        if path.stat().st_size > MAX_TOTAL_BYTES:
            raise ModelRefused(f"file is over the limit of {MAX_TOTAL_BYTES} bytes")
        data = path.read_bytes()
        # judged by content, not by name: a zip is a package, anything else must be ONNX
        if data[:2] == b"PK":
            package = read_package(data)
            task = package.task
            report = validate_model(package.model_bytes)
            check_task_io(report, task)
        else:
            report = validate_model(data)
    except ModelRefused as exc:
        raise ModelRefused(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelRefused(f"{path}: cannot read ({exc.strerror or exc})") from None
    result = {"path": str(path), "accepted": True, **report.to_dict()}
    if task is not None:
        result["task"] = {
            "name": task["name"],
            "address": package.address,
            "recipe": task["features"]["recipe"],
            "loss": task["loss"],
            "batch_size": task["batch_size"],
        }

    def human() -> None:
        fields = {"file": str(path), "verdict": "accepted"}
        if task is not None:
            fields.update(task=task["name"], address=package.address, loss=task["loss"])
        fields.update(
            opset=report.opset,
            ir_version=report.ir_version,
            parameters=report.parameter_count,
            flops_per_example=report.flops_per_example,
            batch_size=report.batch_size,
            operators=_operators(report.operators),
        )
        print_fields(fields)

    emit(result, as_json, human)
