"""Keys shared by the identity tests: one organization and one person per module."""

from __future__ import annotations

import pytest

from identity.keys import generate_key


@pytest.fixture(scope="module")
def org() -> str:
    """An organization's key (JWK)."""
    return generate_key()


@pytest.fixture(scope="module")
def person() -> str:
    """A person's vault key (JWK)."""
    return generate_key()
