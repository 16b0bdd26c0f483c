"""`tessera task run`: local DP-SGD rounds of a task package, on a features file or the vault.

For organizations trying their package and for the vault's owner trying one on their own data:
the rounds run exactly as they will in the vault (validated model, sandboxed child, clipping and
noise done here, privacy ledger). With ``--data`` they train on an ``.npz`` with ``features``
and ``labels`` arrays, and the results are signed with the JWK in ``--key-file`` or, without
one, with a throwaway key whose DID is printed. With ``--dataset`` they train on vault datasets
read through the package's feature recipe (``agents.owner_run``: each read is logged in the
dataset's access history, by the vault's own DID) and the results are signed with the vault's
key. Nothing is sent anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from app.commands.unlock import open_vault
from app.output import emit, json_option, print_table
from vault.errors import TesseraError

_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.group("task")
def task_group() -> None:
    """Check and run federated training tasks locally."""


def _load_npz(path: Path) -> tuple[Any, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"features", "labels"} - set(data.files)
            if missing:
                raise TesseraError(f"{path}: missing arrays {sorted(missing)} in the .npz")
            return data["features"], data["labels"]
    except (OSError, ValueError) as exc:
        raise TesseraError(f"{path}: not a readable .npz ({exc})") from None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".results-", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@task_group.command("run")
@click.argument("package", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=".npz with 'features' [N, ...] and 'labels' [N].",
)
@click.option(
    "--dataset",
    help="Vault dataset(s), comma-separated, read through the package's feature recipe.",
)
@click.option("--rounds", type=click.IntRange(1, 100_000), default=1, show_default=True)
@click.option(
    "--device", type=click.Choice(["cpu", "gpu", "auto"]), default="cpu", show_default=True
)
@click.option(
    "--epsilon-budget",
    type=_POSITIVE,
    default=10.0,
    show_default=True,
    help="Privacy budget for all rounds together.",
)
@click.option(
    "--delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-5,
    show_default=True,
)
@click.option("--clip-norm", type=_POSITIVE, default=1.0, show_default=True)
@click.option("--noise-multiplier", type=_POSITIVE, default=1.0, show_default=True)
@click.option("--learning-rate", type=_POSITIVE, default=0.1, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--local-steps", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@click.option("--expected-batch-size", type=click.IntRange(1), help="Default: the graph's.")
@click.option("--memory-mib", type=click.IntRange(64), default=2048, show_default=True)
@click.option(
    "--time-limit",
    type=_POSITIVE,
    default=60.0,
    show_default=True,
    help="Seconds per round before the task is killed.",
)
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JWK that signs the results (default: a throwaway key; with --dataset the vault's).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed results (JSON) here.",
)
@json_option
@click.pass_context
def run_cmd(
    ctx: click.Context,
    package: Path,
    data_file: Path | None,
    dataset: str | None,
    rounds: int,
    device: str,
    epsilon_budget: float,
    delta: float,
    clip_norm: float,
    noise_multiplier: float,
    learning_rate: float,
    optimizer: str,
    local_steps: int,
    expected_batch_size: int | None,
    memory_mib: int,
    time_limit: float,
    threads: int,
    key_file: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Run DP-SGD rounds of PACKAGE on local data and sign each round's result."""
    if data_file is None and dataset is None:
        raise click.UsageError("give the training data with --data FILE.npz or --dataset NAME")
    names = list(dict.fromkeys(n.strip() for n in (dataset or "").split(",") if n.strip()))
    if dataset is not None and not names:
        raise click.UsageError("--dataset needs at least one dataset name")
    from agents.accounting import PrivacyLedger
    from agents.package import read_package
    from agents.round_result import sign_result
    from agents.runner import DPConfig, SandboxLimits, run_round
    from identity.keys import did_for, generate_key

    pkg = read_package(package)
    if dataset is not None:
        from agents import owner_run

        # datasets the package's recipe does not read are refused before anything else
        owner_run.package_recipe(pkg, names)
        if data_file is not None:
            raise click.UsageError("give --data or --dataset, not both")
        if key_file is not None:
            raise click.UsageError("--dataset signs with the vault's key; leave out --key-file")
        vault = open_vault(ctx)
        built = owner_run.read_features(vault, pkg, names)
        features, labels = built.x, built.y
        jwk, signer = vault.signing_key(), vault.did
    elif key_file is not None:
        features, labels = _load_npz(data_file)
        try:
            jwk = key_file.read_text(encoding="utf-8").strip()
            signer = did_for(jwk)
        except (OSError, ValueError) as exc:
            raise TesseraError(f"{key_file}: not a readable JWK ({exc})") from None
    else:
        features, labels = _load_npz(data_file)
        jwk = generate_key()
        signer = did_for(jwk)
    dp = DPConfig(
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        delta=delta,
        epsilon_budget=epsilon_budget,
        learning_rate=learning_rate,
        optimizer=optimizer,
        local_steps=local_steps,
        expected_batch_size=expected_batch_size,
    )
    limits = SandboxLimits(memory_mib=memory_mib, time_s=time_limit, threads=threads)
    ledger = PrivacyLedger(epsilon_budget, delta)
    shapes = {p["name"]: p["shape"] for p in pkg.task["params"]}
    params = pkg.params
    rows: list[dict[str, Any]] = []
    tokens: list[str] = []
    for index in range(rounds):
        outcome = run_round(
            pkg.task, pkg.model_bytes, params, pkg.address, features, labels, dp, ledger,
            limits=limits, device=device, validate=index == 0, round_index=index,
        )  # fmt: skip
        params = outcome.params
        tokens.append(sign_result(outcome.result, jwk, shapes))
        result = outcome.result
        rows.append({
            "round": index,
            "examples": result.examples_used,
            "samples": result.samples,
            "steps": result.steps,
            "loss_first": outcome.mean_losses[0],
            "loss_last": outcome.mean_losses[-1],
            "epsilon_round": result.epsilon_round,
            "epsilon_total": result.epsilon_total,
            "seconds": round(outcome.seconds, 3),
        })  # fmt: skip
    if out is not None:
        _write_atomic(out, json.dumps({"signer": signer, "results": tokens}) + "\n")
    data = {
        "package": str(package),
        "address": pkg.address,
        "task": pkg.task["name"],
        "signer": signer,
        "ephemeral_key": key_file is None and dataset is None,
        "datasets": names or None,
        "examples": int(features.shape[0]),
        "device": device,
        "providers": outcome.sandbox.get("providers"),  # what ran, e.g. CUDA under "auto"
        "memory_limit": outcome.sandbox.get("memory"),
        "network_isolation": outcome.sandbox.get("network"),
        "syscall_filter": outcome.sandbox.get("syscalls"),
        "noise_drawn_by": outcome.sandbox.get("noise"),
        "fused_sgd_update": outcome.sandbox.get("fused_update"),
        "epsilon_spent": ledger.spent(),
        "epsilon_budget": epsilon_budget,
        "delta": delta,
        "rounds": rows,
        "out": str(out) if out else None,
    }

    def human() -> None:
        columns = ["round", "examples", "steps", "loss_first", "loss_last", "epsilon_total"]
        print_table(rows, [*columns, "seconds"])
        cuda = "CUDAExecutionProvider" in (data["providers"] or [])
        click.echo(f"trained on the {'GPU (CUDA)' if cuda else 'CPU'}, in a sandboxed process")
        click.echo(
            f"epsilon spent {ledger.spent():.4g} of {epsilon_budget:g} at delta {delta:g}; "
            f"signed by {signer}"
            + (" (a throwaway key)" if data["ephemeral_key"] else "")
            + (" (this vault's key)" if dataset is not None else "")
            + (f"; results in {out}" if out else "")
        )

    emit(data, as_json, human)


try:
    from app.commands.task_validate import validate_cmd
except ImportError:  # pragma: no cover - the validator's face ships separately
    pass
else:
    task_group.add_command(validate_cmd, "validate")
