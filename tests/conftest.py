"""Keep every test's prepared data and demo corpus out of the user's home cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _podium_cache(tmp_path_factory):
    if "PODIUM_CACHE" not in os.environ:
        os.environ["PODIUM_CACHE"] = str(tmp_path_factory.mktemp("podium-cache"))
    yield
