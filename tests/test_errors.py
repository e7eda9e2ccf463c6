"""Every public exception shares one base and keeps the builtin it always had."""

from __future__ import annotations

import pytest

import spikestore
from spikestore import errors

BUILTIN = {
    "FormatError": ValueError,
    "UnsafeStoreError": ValueError,
    "RecordError": ValueError,
    "WriteError": RuntimeError,
    "StoreLockedError": RuntimeError,
    "StoreExistsError": FileExistsError,
    "ReadError": RuntimeError,
    "StoreReplacedError": RuntimeError,
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_public_exception_has_base_and_builtin(name: str) -> None:
    cls = getattr(spikestore, name)
    assert cls is getattr(errors, name)
    assert name in spikestore.__all__
    assert issubclass(cls, spikestore.SpikestoreError)
    assert issubclass(cls, BUILTIN[name])


def test_every_exception_in_the_package_is_in_errors() -> None:
    """No module defines a public exception of its own."""
    import importlib
    import pkgutil

    found = set()
    for info in pkgutil.walk_packages(spikestore.__path__, "spikestore."):
        if info.name.endswith(("__main__", ".cli", ".demo", ".plot", ".export", ".testing")):
            continue
        if info.name == "spikestore.view._data":
            continue  # NotFound and BadRequest become HTTP 404 and 400: never raised to users
        module = importlib.import_module(info.name)
        for attr, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and not attr.startswith("_")
                and value.__module__ == info.name
            ):
                found.add(f"{info.name}.{attr}")
    assert found == {f"spikestore.errors.{n}" for n in errors.__all__}


def test_store_exists_error_names_both_ways_out(tmp_path) -> None:
    err = spikestore.StoreExistsError(str(tmp_path))
    assert "mode='a'" in str(err) and "mode='w'" in str(err)
    assert err.where == str(tmp_path)
