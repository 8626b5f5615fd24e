"""The recorder's settings: YAML (`yaml.safe_load` only) into frozen dataclasses.

Without a config file every setting takes its default here, which is also what
`etc/recorder.yaml` shows, annotated. Command-line flags override single settings.
The master key is never in the YAML: only the path of a key file or the name of a
systemd credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import yaml

from recorder.compliance.settings import PciSettings, PolicySettings, RetentionSettings
from recorder.configschema import load_section, require
from recorder.core.limits import CoreLimits
from recorder.errors import ConfigError


@dataclass(frozen=True)
class CaptureSettings:
    interface: str = "any"  # a network interface, or "any" (Linux cooked capture)
    filter: str = "udp or tcp"  # BPF, compiled by libpcap
    snaplen: int = 65535
    promiscuous: bool = True
    # Kernel capture ring (pcap_set_buffer_size). It holds the traffic while the recorder sets
    # calls up: 2,500 calls starting together dropped 5-9 % of their RTP with 64 MiB, none
    # with 256 MiB (bench/live_replay.py --ring-mib).
    buffer_bytes: int = 256 * 1024 * 1024
    timeout_ms: int = 100  # block timeout: packets wait at most this long in the ring
    workers: int = 1  # recording processes (only 1: see runtime/capture_process.py)
    reader_process: bool = True  # read the ring in a process of its own (a second core)

    def check(self, path: str) -> None:
        require(bool(self.interface), f"{path}.interface", "must name an interface or 'any'")
        require(
            self.interface.isprintable() and "/" not in self.interface and len(self.interface) < 64,
            f"{path}.interface",
            "is not an interface name",
        )
        require(0 < self.snaplen <= 262144, f"{path}.snaplen", "must be between 1 and 262144")
        require(
            1 << 20 <= self.buffer_bytes < 1 << 31,  # libpcap takes a C int
            f"{path}.buffer_bytes",
            "must be between 1 MiB (1048576) and 2 GiB - 1 (2147483647)",
        )
        require(0 < self.timeout_ms <= 1000, f"{path}.timeout_ms", "must be between 1 and 1000")
        require(self.workers == 1, f"{path}.workers", "must be 1 (one recording process)")


@dataclass(frozen=True)
class S3Settings:
    """Where closed recordings and audit segments go (archive backend s3); see
    recorder/scale/. Recordings are written locally first and uploaded when closed."""

    endpoint: str = ""  # e.g. https://s3.eu-central-1.amazonaws.com; empty: AWS by region
    bucket: str = ""  # created with Object Lock enabled (versioning follows)
    region: str = "us-east-1"
    path_style: bool = False  # https://host/bucket/key instead of https://bucket.host/key
    credential: str = ""  # systemd credential holding access key id and secret; else environment
    prefix: str = ""  # prepended to every object key, e.g. "recorder/"
    keep_local: bool = False  # keep the local copy after a verified upload
    verify: Literal["head", "read"] = "head"  # check an upload by its checksum, or read it back
    spool_max_bytes: int = 10 * 1024**3  # recordings waiting for upload; full: like a full disk
    timeout_s: float = 10.0  # connect and read timeout of one request
    retry_max_s: float = 60.0  # longest wait between retries while S3 is unavailable
    drain_timeout_s: float = 30.0  # at the end of a replay or a stop: wait for pending uploads
    audit_ship_interval_s: float = 60.0  # ship new audit lines at least this often
    audit_retain_days: int = 2557  # Object Lock of shipped audit segments (7 years)

    def check(self, path: str) -> None:
        require(self.spool_max_bytes > 0, f"{path}.spool_max_bytes", "must be positive")
        for name in ("timeout_s", "retry_max_s", "audit_ship_interval_s"):
            require(getattr(self, name) > 0, f"{path}.{name}", "must be positive")
        require(self.drain_timeout_s >= 0, f"{path}.drain_timeout_s", "must not be negative")
        require(self.audit_retain_days > 0, f"{path}.audit_retain_days", "must be positive")
        require(
            self.prefix == "" or (self.prefix.endswith("/") and not self.prefix.startswith("/")),
            f"{path}.prefix",
            "must end with '/' and not start with one",
        )


@dataclass(frozen=True)
class ArchiveSettings:
    backend: Literal["local", "s3"] = "local"
    path: str = "archive"
    min_free_bytes: int = 512 * 1024 * 1024  # stop opening recordings below this free space
    fsync_interval_s: float = 1.0
    s3: S3Settings = field(default_factory=S3Settings)

    def check(self, path: str) -> None:
        require(bool(self.path), f"{path}.path", "must name a folder")
        require(self.min_free_bytes >= 0, f"{path}.min_free_bytes", "must not be negative")
        require(self.fsync_interval_s > 0, f"{path}.fsync_interval_s", "must be positive")
        if self.backend == "s3":
            require(bool(self.s3.bucket), f"{path}.s3.bucket", "must be set for the s3 backend")


@dataclass(frozen=True)
class IndexSettings:
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: str = ""  # libpq connection string for postgresql (the key store lives there too)
    connect_timeout_s: int = 5

    def check(self, path: str) -> None:
        if self.backend == "postgresql":
            require(bool(self.dsn), f"{path}.dsn", "must be set for the postgresql backend")
        require(self.connect_timeout_s > 0, f"{path}.connect_timeout_s", "must be positive")


@dataclass(frozen=True)
class KeySettings:
    file: str = "master.key"  # mode 0600, readable only by the service user
    credential: str = "master-key"  # systemd LoadCredential= name; wins over `file` if present

    def check(self, path: str) -> None:
        require(bool(self.file or self.credential), f"{path}.file", "must name a key file")
        require(
            "/" not in self.credential and self.credential not in (".", ".."),
            f"{path}.credential",
            "must be a credential name, not a path",
        )


@dataclass(frozen=True)
class LimitSettings:
    jitter_s: float = CoreLimits.jitter_s
    max_drift_s: float = CoreLimits.max_drift_s
    flush_interval_s: float = CoreLimits.flush_interval_s
    bye_linger_s: float = CoreLimits.bye_linger_s
    failed_linger_s: float = CoreLimits.failed_linger_s
    idle_timeout_s: float = CoreLimits.idle_timeout_s
    setup_timeout_s: float = CoreLimits.setup_timeout_s
    max_calls: int = CoreLimits.max_calls

    def check(self, path: str) -> None:
        for f in fields(self):
            require(getattr(self, f.name) > 0, f"{path}.{f.name}", "must be positive")

    def core_limits(self) -> CoreLimits:
        return replace(CoreLimits(), **{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    address: str = "127.0.0.1:9750"

    def check(self, path: str) -> None:
        host, sep, port = self.address.rpartition(":")
        require(
            bool(sep and host and port.isdigit() and 0 < int(port) < 65536),
            f"{path}.address",
            "must be HOST:PORT",
        )


@dataclass(frozen=True)
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # DEBUG adds numbers and URIs


@dataclass(frozen=True)
class Config:
    sensor_id: str = "sensor-1"
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    pci: PciSettings = field(default_factory=PciSettings)

    def check(self, path: str) -> None:
        require(
            self.sensor_id.replace("-", "").replace("_", "").isalnum(),
            "sensor_id",
            "must be letters, digits, '-' or '_'",
        )


def parse_config(text: str, source: str = "config") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}: YAML error{where}: {problem}") from None
    return load_section(Config, data, "")


def load_config(path: Path | None) -> Config:
    """The settings in `path`, or every default when `path` is None."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        return parse_config(text, str(path))
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise ConfigError(message) from None
