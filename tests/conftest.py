"""Shared test settings: nothing touches the network, and the Hub runs offline."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# numba's coloured messages (colorama) swap sys.stderr process-wide from whichever thread compiles
# (see probex/language/atlas.py); set before anything imports numba
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")
# Layer-bank caches and other probex caches of the test session live in a throwaway folder,
# never in the user's ~/.cache.
os.environ["PROBEX_CACHE"] = tempfile.mkdtemp(prefix="probex-test-cache-")
atexit.register(shutil.rmtree, os.environ["PROBEX_CACHE"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def small_jungle(tmp_path_factory):
    """A small demo jungle built once per test session (about 40 s on two cores, validation included)."""
    from probex.cli import main

    out = tmp_path_factory.mktemp("jungle")
    assert main(["jungle", "build", "--out", str(out), "--size", "small", "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="session")
def user_zoo(small_jungle, tmp_path_factory):
    """Two trees of the small jungle, renamed and saved as a user's zoo with no roles declared: a classifier
    tree ("alpha") and an aligned LoRA tree ("beta", its roles read off its held-out splits)."""
    from tests.user_zoo import copy_as_user_zoo

    return copy_as_user_zoo(small_jungle, tmp_path_factory.mktemp("user-zoo"),
                            {"cnn-supervised": "alpha", "mini-sd": "beta"})
