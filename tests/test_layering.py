"""The core packages import downward only: app -> agents -> identity/vault, and never Qt.

Every ``import`` and ``from ... import`` in vault/, identity/ and agents/ (at module level,
inside functions, under TYPE_CHECKING alike) is read from the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("vault", "identity", "agents")
# higher number = higher layer. DESIGN.md draws identity above vault, but the vault signs its
# checkpoints and consents with its DID key and re-verifies stored credentials, so the two
# share a rank here; VAULT_USES_IDENTITY pins which identity modules the vault may use.
RANK = {"vault": 0, "identity": 0, "agents": 1, "app": 2}
VAULT_USES_IDENTITY = {"identity.keys", "identity.credentials"}
GUI_PACKAGES = {"PySide6", "shiboken6", "pyqtgraph"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found += [(node.lineno, node.module or "")]
            # `from agents import rounds` names the module agents.rounds
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", CORE)
def test_a_core_package_imports_no_higher_layer_and_no_gui(package: str) -> None:
    assert _sources(package)
    wrong = []
    for path in _sources(package):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if RANK.get(top, -1) > RANK[package] or top in GUI_PACKAGES:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert wrong == []


def test_the_vault_uses_only_the_identity_modules_it_always_has() -> None:
    used = {
        ".".join(module.split(".")[:2])
        for path in _sources("vault")
        for _, module in _imports(path)
        if module.startswith("identity.")
    }
    assert used <= VAULT_USES_IDENTITY
