"""The vault's owner trying a task package on their own data, on this machine only.

``tessera task run PACKAGE --dataset NAME`` reads the named datasets through the package's
feature recipe (``task.json`` ``features.recipe``, label ``label.field``) and builds the
features the rounds train on. No consent is involved — the data is the owner's — but every
read goes through the same logged read as an organization's task (``vault.task_reads``): each
dataset's access log gets a ``read`` entry by the vault's own DID, with the purpose "local task
run of <package address> by the owner", the row count and the digest. Nothing is sent anywhere.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agents.package import TaskPackage
from agents.rounds import MIN_EXAMPLES
from vault.datasets import dataset_id
from vault.errors import ModelRefused, TesseraError
from vault.recipes import Features, Recipe, get_recipe
from vault.task_reads import read_logged

if TYPE_CHECKING:
    from vault.core import Vault


def owner_purpose(package: TaskPackage) -> str:
    """The purpose logged for the owner's local run of ``package``."""
    return f"local task run of {package.address} by the owner"


def package_recipe(package: TaskPackage, datasets: Sequence[str]) -> Recipe:
    """The package's recipe, once it is known to read every one of ``datasets`` and to give
    the features the package expects; RecipeRefused or ModelRefused otherwise."""
    task = package.task
    recipe = get_recipe(task["features"]["recipe"])
    # the datasets, and the label, must be ones this recipe reads and offers
    recipe.check(datasets, (), task["label"]["field"])
    if list(task["features"]["shape"]) != recipe.shape(()):
        raise ModelRefused(
            f"the package expects features {task['features']['shape']}, recipe {recipe.name}"
            f" gives {recipe.shape(())}"
        )
    return recipe


def read_features(vault: Vault, package: TaskPackage, datasets: Sequence[str]) -> Features:
    """Read ``datasets`` through the package's recipe (each read logged) and build features.

    Every dataset is checked before anything is read; the reads commit together.
    """
    recipe = package_recipe(package, datasets)
    for name in datasets:
        dataset_id(vault.conn, name)  # DatasetNotFound before any read
    purpose = owner_purpose(package)
    rows = {}
    with vault.transaction():
        for name in datasets:
            columns = next(
                cols for pattern, cols in recipe.reads.items() if fnmatch.fnmatchcase(name, pattern)
            )
            rows[name] = read_logged(vault, name, columns, actor=vault.did, purpose=purpose)
    features = recipe.build(rows, (), package.task["label"]["field"])
    if len(features) < MIN_EXAMPLES:
        raise TesseraError(
            f"{', '.join(datasets)} give {len(features)} example(s) for recipe {recipe.name};"
            f" at least {MIN_EXAMPLES} are needed"
        )
    return features
