"""Requests entering the vault: the request verified, its task package checked, then stored.

This is the one way a training request gets into the inbox, from an exchange or from a request
file alike. The request must verify (signature, issuer, expiry, shape:
``identity.credentials.verify_request``) and its package must check out: the package's hash is
the request's, it reads as a package, its model passes the validator, and its recipe, label
and feature shape are the request's. Only then does ``vault.inbox`` store it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.package import TaskPackage, package_address, read_package
from agents.validator import check_task_io, validate_model
from identity.credentials import TrainingRequest, verify_request
from vault.errors import ModelRefused, TesseraError, VerificationFailed
from vault.inbox import already_stored, store_request
from vault.recipes import get_recipe

if TYPE_CHECKING:
    from vault.core import Vault


def check_package(request: TrainingRequest, package: bytes) -> TaskPackage:
    """The request's task package, checked against it; VerificationFailed or ModelRefused."""
    if package_address(package) != request.package:
        raise VerificationFailed(
            f"the task package does not match the request (expected {request.package})"
        )
    pkg = read_package(package)
    recipe = get_recipe(request.recipe)
    task = pkg.task
    try:
        same_recipe = get_recipe(task["features"]["recipe"]).ref == recipe.ref
    except TesseraError:
        same_recipe = False
    if not same_recipe:
        raise ModelRefused(
            f"the package uses recipe {task['features']['recipe']!r},"
            f" the request {request.recipe!r}"
        )
    label = recipe.label(request.label, request.fields)
    if task["label"]["field"] != request.label:
        raise ModelRefused(
            f"the package's label is {task['label']['field']!r}, not {request.label!r}"
        )
    if task["label"]["dtype"] != label.dtype or (
        label.classes is not None and task["label"]["classes"] != label.classes
    ):
        raise ModelRefused(
            f"the package's label type does not fit label {request.label!r} of {recipe.name}"
        )
    if list(task["features"]["shape"]) != recipe.shape(request.fields):
        raise ModelRefused(
            f"the package expects features {task['features']['shape']}, recipe {recipe.name}"
            f" gives {recipe.shape(request.fields)}"
        )
    check_task_io(validate_model(pkg.model_bytes), dict(task))
    return pkg


def receive_request(
    vault: Vault, jws: str, package: bytes, source: str, now: float | None = None
) -> tuple[TrainingRequest, bool]:
    """Verify a request, check its package and store both; return (request, newly added).

    The same request again is a no-op; a different request under a known id is refused.
    """
    request = verify_request(jws.strip(), now)
    if already_stored(vault, request):
        return request, False
    check_package(request, package)
    return request, store_request(vault, request, package, source, now)
