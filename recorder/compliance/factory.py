"""Builds the compliance pieces the recorder runs with, from the config: the recording
policy, the expiry rule the writer applies at close, and the core with PCI DSS pause."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict

from recorder.compliance.pci import ComplianceCore, DtmfControl
from recorder.compliance.retention import build_expiry_rule, class_expiry
from recorder.compliance.rules import RulePolicy
from recorder.compliance.settings import PROTECTED_BASIS
from recorder.config import Config
from recorder.core.pipeline import RecorderCore
from recorder.core.policy import RecordEverything, RecordingPolicy
from recorder.errors import ConfigError
from recorder.runtime.audit import Value

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 1_000_000_000
UNCONFIGURED_WARNING = (
    "no recording policy is configured: every call is recorded under purpose "
    "'unspecified' and kept 30 days (set policy.rules in the config)"
)


def check_compliance(config: Config) -> None:
    """Rules across sections: each rule's retention class exists, and a class imposed by
    law (`obligation`) is only used with the legal basis `legal_obligation`."""
    classes = build_expiry_rule(config)
    for i, rule in enumerate(config.policy.rules):
        if not rule.record:
            continue
        where = f"policy.rules[{i}]"
        cls = classes.get(rule.retention_class)
        if cls is None:
            known = ", ".join(sorted(classes))
            raise ConfigError(
                f"{where}.retention_class {rule.retention_class!r} is not a retention class "
                f"(known: {known})"
            )
        if cls.obligation and rule.legal_basis != PROTECTED_BASIS:
            raise ConfigError(
                f"{where}.legal_basis must be legal_obligation: retention class "
                f"{rule.retention_class!r} is imposed by {cls.obligation}"
            )


def build_policy(config: Config) -> RecordingPolicy:
    """Which calls are recorded, under which purpose. Without rules (the development
    default) every call is recorded, with a warning."""
    check_compliance(config)
    if not config.policy.configured:
        log.warning(UNCONFIGURED_WARNING)
        if not config.policy.opt_out.header:
            return RecordEverything()
    return RulePolicy(config.policy)


def build_dtmf(config: Config) -> DtmfControl | None:
    """The DTMF listener for PCI pause/resume patterns and DTMF opt-out, if any is set."""
    dtmf = config.pci.dtmf
    opt_out = config.policy.opt_out.dtmf
    if not (dtmf.pause or opt_out):
        return None
    return DtmfControl(pause=dtmf.pause, resume=dtmf.resume, opt_out=opt_out)


def build_core(config: Config) -> RecorderCore:
    """The core wired with the policy, DTMF controls and the pause time-out."""
    return ComplianceCore(
        config.limits.core_limits(),
        policy=build_policy(config),
        dtmf=build_dtmf(config),
        max_pause_s=config.pci.max_pause_s,
    )


def build_expiry(config: Config) -> Callable[[str, int], int | None]:
    """A recording's expiry, fixed when it closes: its end plus its class's period
    (`default`: 30 days unless configured). An unknown class never expires by itself."""
    classes = build_expiry_rule(config)

    def expiry(retention_class: str, end_ns: int) -> int | None:
        cls = classes.get(retention_class)
        return None if cls is None else class_expiry(cls, end_ns)

    return expiry


def policy_summary(config: Config) -> dict[str, Value]:
    """For the audit trail at start: whether a policy is configured, its rules, and a
    hash of every compliance setting (a changed policy shows as a changed hash)."""
    settings = {
        "policy": asdict(config.policy),
        "retention": asdict(config.retention),
        "pci": asdict(config.pci),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {
        "configured": config.policy.configured,
        "rules": list[Value](rule.name for rule in config.policy.rules),
        "sha256": digest,
    }
