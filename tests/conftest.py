"""Fixtures shared by the test files (helpers live in ``spikestore.testing``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spikestore.testing import S3Server, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """An S3-compatible server (moto) on 127.0.0.1 with a bucket, for the session.

    Skipped only where moto is not installed (CI installs the ``s3`` extra's test tools).
    """
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    with s3_server() as server:
        yield server
