"""The service's settings: command-line overrides on top of the config file, the master
keys' location (systemd credential, key file or key directory), the checks `check-config`
runs, and what a SIGHUP may change while running.

Reloadable (SIGHUP) without a restart, because nothing holds them but the shells:
  log.level, archive.min_free_bytes, metrics.enabled, metrics.address.
Everything else (capture, archive path, keys, limits held by the core's stages, policy,
retention) needs a restart: a reload reports those as `needs_restart` and keeps the
running values.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from recorder.config import Config, load_config
from recorder.core.model import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL
from recorder.errors import ConfigError
from recorder.runtime.keyfile import KeyRing, credential_path, load_key_ring

RELOADABLE = frozenset(
    {"log.level", "archive.min_free_bytes", "metrics.enabled", "metrics.address"}
)

# command-line option -> (section, setting)
OVERRIDES = {
    "interface": ("capture", "interface"),
    "filter": ("capture", "filter"),
    "archive": ("archive", "path"),
    "key": ("keys", "file"),
    "metrics_address": ("metrics", "address"),
    "log_level": ("log", "level"),
}


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """`config` with the given command-line values (None: not given), each re-checked."""
    for option, value in overrides.items():
        if value is None:
            continue
        section_name, setting = OVERRIDES[option]
        changes: dict[str, Any] = {setting: str(value)}
        if option == "key":
            changes["credential"] = ""  # an explicit key file wins over a credential
        section = dataclasses.replace(getattr(config, section_name), **changes)
        check = getattr(section, "check", None)
        if check is not None:
            check(section_name)
        config = dataclasses.replace(config, **{section_name: section})
    return config


def load_service_config(path: Path | None, overrides: dict[str, Any]) -> Config:
    return with_overrides(load_config(path), overrides)


def key_path(config: Config) -> Path:
    """The systemd credential when `keys.credential` names one that is present, else the file."""
    if config.keys.credential:
        candidate = credential_path(config.keys.credential)
        if candidate is not None and candidate.exists():
            return candidate
        if not config.keys.file:
            raise ConfigError(
                f"keys.credential {config.keys.credential!r} is not in $CREDENTIALS_DIRECTORY"
            )
    return Path(config.keys.file)


def load_keys(config: Config) -> KeyRing:
    """The key ring: a key file (a ring of one) or a key directory (after `keys rotate`)."""
    return load_key_ring(key_path(config))


def check_compliance_settings(config: Config) -> str:
    """What load cannot check alone: each rule's retention class exists and fits its legal
    basis, the control token file is private. Returns a one-line summary."""
    from recorder.compliance.control import read_token
    from recorder.compliance.factory import check_compliance

    check_compliance(config)
    control = config.pci.control
    if control.enabled:
        try:
            read_token(Path(control.token_file))
        except ConfigError as exc:
            raise ConfigError(f"pci.control.token_file: {exc}") from None
    policy = config.policy
    rules = f"{len(policy.rules)} rules" if policy.configured else "none (records every call)"
    classes = ", ".join(sorted(config.retention.classes))
    pause = "dtmf" if config.pci.dtmf.pause else ""
    pause += ("+" if pause else "") + "control socket" if control.enabled else ""
    return f"policy {rules}; retention classes {classes}; PCI pause {pause or 'off'}"


def guess_linktype(interface: str) -> int:
    """For compiling the filter without opening the interface: "any" is Linux cooked
    capture; other interfaces are nearly always Ethernet (lo included)."""
    return LINKTYPE_LINUX_SLL if interface == "any" else LINKTYPE_ETHERNET


def check_capture_filter(config: Config) -> None:
    from recorder.runtime.libpcap import check_filter

    capture = config.capture
    problem = check_filter(capture.filter, guess_linktype(capture.interface), capture.snaplen)
    if problem is not None:
        raise ConfigError(f"capture.filter {capture.filter!r}: {problem}")


# The keywords, not a host name that contains them ("inbound-gw.example").
_PACKET_TYPE_WORDS = re.compile(r"(?<![\w.-])(inbound|outbound|ifindex)(?![\w.-])")


def capture_filter_caveat(expression: str) -> str | None:
    """A filter that compiles but loses packets at start, or None. When a filter is set,
    libpcap filters the packets already in the kernel's ring in user space, where the
    Linux packet-type tests (`inbound`, `outbound`, `ifindex`) reject every packet."""
    found = _PACKET_TYPE_WORDS.search(expression)
    if found is None:
        return None
    return (
        f"capture.filter uses {found.group(1)!r}: the packets captured before the filter "
        "took effect are lost at every start (measured on lo: the SIP of 145-211 of 2,500 "
        "calls, which were then not recorded); filter by address or port instead"
    )


def flatten(obj: object, prefix: str = "") -> dict[str, str]:
    """Every setting by dotted name, as text (for comparing configs and the audit)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, name + "."))
        elif isinstance(value, dict):
            for key, item in value.items():
                if dataclasses.is_dataclass(item):
                    out.update(flatten(item, f"{name}.{key}."))
                else:
                    out[f"{name}.{key}"] = str(item)
        else:
            out[name] = str(value)
    return out


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    applied: dict[str, str]  # setting -> new value, applied now
    needs_restart: list[str]  # settings that changed but keep their running value
    config: Config  # the running config after applying


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    old_flat, new_flat = flatten(running), flatten(new)
    changed = sorted(
        k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k)
    )
    applied = {k: new_flat[k] for k in changed if k in RELOADABLE}
    restart = [k for k in changed if k not in RELOADABLE]
    config = dataclasses.replace(
        running,
        log=new.log,
        metrics=new.metrics,
        archive=dataclasses.replace(running.archive, min_free_bytes=new.archive.min_free_bytes),
    )
    return ReloadPlan(applied, restart, config)
