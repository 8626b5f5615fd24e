"""The service's settings: the shipped example is the defaults, broken configs are one
line naming the setting, `check-config` checks the key file and the BPF filter too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recorder.cli import main
from recorder.config import Config, load_config, parse_config
from recorder.errors import ConfigError
from recorder.runtime.keyfile import generate_master_key, write_key_file
from recorder.runtime.servicecfg import flatten, key_path, plan_reload, with_overrides

REPO = Path(__file__).resolve().parents[2]
OWNED = (
    "sensor_id", "capture", "archive", "index", "keys", "limits", "metrics", "log",
    "policy", "retention", "pci",
)  # fmt: skip


def test_example_config_holds_every_default() -> None:
    config = load_config(REPO / "etc" / "recorder.yaml")
    defaults = Config()
    for section in OWNED:
        assert getattr(config, section) == getattr(defaults, section), section
    text = (REPO / "etc" / "recorder.yaml").read_text()
    for name in flatten(defaults):
        if name.split(".")[0] in OWNED:  # every setting is written out, not defaulted
            assert f"{name.rsplit('.', 1)[-1]}:" in text, name


BROKEN = [
    ("capture: {snaplen: big}", "capture.snaplen must be an integer, not 'big'"),
    ("capture: {snaplen: 0}", "capture.snaplen must be between 1 and 262144"),
    ("capture: {interfce: eth0}", "unknown setting 'capture.interfce' (known here: "
     "buffer_bytes, filter, interface, promiscuous, reader_process, snaplen, timeout_ms, workers)"),
    ("capture: {interface: ''}", "capture.interface must name an interface or 'any'"),
    ("capture: {interface: ../etc}", "capture.interface is not an interface name"),
    ("capture: {promiscuous: 'yes'}", "capture.promiscuous must be true or false, not 'yes'"),
    ("capture: {buffer_bytes: 1000}",
     "capture.buffer_bytes must be between 1 MiB (1048576) and 2 GiB - 1 (2147483647)"),
    ("capture: {buffer_bytes: 2147483648}",  # a C int for libpcap: 2 GiB would wrap
     "capture.buffer_bytes must be between 1 MiB (1048576) and 2 GiB - 1 (2147483647)"),
    ("capture: {timeout_ms: 0}", "capture.timeout_ms must be between 1 and 1000"),
    ("capture: {workers: 4}", "capture.workers must be 1 (one recording process)"),
    ("capture: eth0", "capture must be a mapping of settings"),
    ("archive: {min_free_bytes: -1}", "archive.min_free_bytes must not be negative"),
    ("archive: {path: ''}", "archive.path must name a folder"),
    ("keys: {credential: ../master.key}", "keys.credential must be a credential name, not a path"),
    ("keys: {file: '', credential: ''}", "keys.file must name a key file"),
    ("keys: {secret: abc}", "unknown setting 'keys.secret' (known here: credential, file)"),
    ("limits: {jitter_s: 0}", "limits.jitter_s must be positive"),
    ("limits: {max_calls: 1.5}", "limits.max_calls must be an integer, not 1.5"),
    ("metrics: {address: 9750}", "metrics.address must be a string, not 9750"),
    ("metrics: {address: localhost}", "metrics.address must be HOST:PORT"),
    ("log: {level: LOUD}",
     "log.level must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', not 'LOUD'"),
    ("log: [INFO]", "log must be a mapping of settings"),
    ("capture:\n  snaplen: 1\n snaplen: 2", "config: YAML error at line 3: expected <block end>, "
     "but found '<block mapping start>'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_config_is_one_line_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    write_key_file(path, generate_master_key())
    return path


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check-config", *args])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_check_config_accepts_a_good_config(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "recorder.yaml"
    config.write_text(f"keys: {{file: {key}}}\ncapture: {{filter: udp port 5060}}\n")
    code, out, err = check(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    assert out.startswith(f"config OK: {config} (interface any, archive archive, key {key} kid ")


def test_check_config_warns_of_a_limit_on_open_files_that_caps_the_calls(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's default for a service (1,024, the unit sets 65,536): each recording holds a
    file, and the filter denies the setrlimit that would raise it."""
    import recorder.runtime.fdlimit as fdlimit

    monkeypatch.setattr(fdlimit.resource, "getrlimit", lambda _which: (1024, 1024))
    config = tmp_path / "recorder.yaml"
    config.write_text(f"keys: {{file: {key}}}\n")
    code, out, err = check(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (
        "warning: open files are limited to 1,024 (LimitNOFILE= in the unit, ulimit -n): "
        "at most 896 calls can be recorded at once; raise the limit to 65,536"
    )


@pytest.mark.parametrize(
    ("expression", "word"),
    [
        ("udp and inbound", "inbound"),
        ("outbound or port 5060", "outbound"),
        ("ifindex 2", "ifindex"),
    ],
)
def test_check_config_warns_of_a_filter_that_loses_packets_at_start(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], expression: str, word: str
) -> None:
    """It compiles, but libpcap applies it in user space to what the ring holds when the
    capture starts, where these Linux packet-type tests reject every packet."""
    config = tmp_path / "recorder.yaml"
    config.write_text(f"keys: {{file: {key}}}\ncapture: {{filter: '{expression}'}}\n")
    code, out, err = check(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith(f"warning: capture.filter uses {word!r}: the packets")


def test_a_host_name_containing_inbound_is_no_warning() -> None:
    from recorder.runtime.servicecfg import capture_filter_caveat

    assert capture_filter_caveat("udp or tcp") is None
    assert capture_filter_caveat("host inbound-gw.example or host gw.inbound") is None
    assert capture_filter_caveat("(inbound) and udp") is not None


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("capture: {snaplen: -5}", "{config}: capture.snaplen must be between 1 and 262144"),
        ("capture: {filter: 'udp and ('}",
         "capture.filter 'udp and (': can't parse filter expression: syntax error"),
        ("keys: {file: KEY.missing}", "key file KEY.missing does not exist"),
    ],
)  # fmt: skip
def test_check_config_rejects_with_one_line(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, message: str
) -> None:
    config = tmp_path / "recorder.yaml"
    text = yaml_text if "KEY" in yaml_text else yaml_text + f"\nkeys: {{file: {key}}}"
    config.write_text(text.replace("KEY", str(key)))
    code, out, err = check(capsys, "--config", str(config))
    expected = message.replace("{config}", str(config)).replace("KEY", str(key))
    assert (code, out, err) == (2, "", f"recorder check-config: {expected}")


def test_check_config_refuses_a_key_file_others_can_read(
    key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(key, 0o644)
    code, _, err = check(capsys, "--key", str(key))
    assert code == 2
    assert err == (
        f"recorder check-config: key file {key} is readable by others (mode 0644); "
        f"run chmod 600 {key}"
    )


def test_flags_override_the_file_and_are_checked() -> None:
    config = with_overrides(Config(), {"interface": "lo", "archive": Path("/a"), "key": None})
    assert (config.capture.interface, config.archive.path) == ("lo", "/a")
    with pytest.raises(ConfigError, match=r"^metrics\.address must be HOST:PORT$"):
        with_overrides(Config(), {"metrics_address": "nowhere"})
    assert with_overrides(Config(), {"key": Path("k")}).keys.credential == ""


def test_systemd_credential_wins_over_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert key_path(Config()) == Path("master.key")  # credential absent: the file
    (tmp_path / "master-key").write_text("x")
    assert key_path(Config()) == tmp_path / "master-key"


def test_reload_plan_applies_safe_settings_only() -> None:
    running = Config()
    new = parse_config("log: {level: DEBUG}\ncapture: {interface: eth1}\nlimits: {jitter_s: 2}")
    plan = plan_reload(running, new)
    assert plan.applied == {"log.level": "DEBUG"}
    assert plan.needs_restart == ["capture.interface", "limits.jitter_s"]
    assert plan.config.log.level == "DEBUG"
    assert plan.config.capture == running.capture and plan.config.limits == running.limits


RULE = """
policy:
  rules:
    - name: quality
      purpose: quality
      legal_basis: LEGAL_BASIS
      retention_class: CLASS
NOTICE
retention:
  classes:
    quality: {days: 90}
    mifid: {years: 5, obligation: "MiFID II Art 16(7)"}
"""


def rule_config(
    tmp_path: Path, key: Path, *, basis: str = "legitimate_interests", cls: str = "quality",
    notice: str = "      notice: IVR announcement Q-1", extra: str = "",
) -> Path:  # fmt: skip
    text = RULE.replace("LEGAL_BASIS", basis).replace("CLASS", cls).replace("NOTICE", notice)
    config = tmp_path / "recorder.yaml"
    config.write_text(text + f"keys: {{file: {key}}}\n" + extra)
    return config


def test_check_config_checks_the_compliance_sections(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = rule_config(tmp_path, key)
    code, out, err = check(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == (
        "policy 1 rules; retention classes mifid, quality; PCI pause off"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"notice": ""}, "{config}: policy.rules[0].notice must name the notice that informed "
         "callers and staff (a rule without one is refused)"),
        ({"cls": "gold"}, "policy.rules[0].retention_class 'gold' is not a retention class "
         "(known: default, mifid, quality)"),
        ({"cls": "mifid"}, "policy.rules[0].legal_basis must be legal_obligation: retention "
         "class 'mifid' is imposed by MiFID II Art 16(7)"),
        ({"extra": "pci: {control: {enabled: true, token_file: TOKEN}}\n"},
         "pci.control.token_file: control token file TOKEN is readable by others (mode 0644)"),
    ],
)  # fmt: skip
def test_check_config_refuses_compliance_mistakes_with_one_line(
    tmp_path: Path,
    key: Path,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, str],
    message: str,
) -> None:
    token = tmp_path / "control.token"
    token.write_text("a-token-of-more-than-16-bytes\n")
    token.chmod(0o644)
    if "extra" in changes:
        changes = {"extra": changes["extra"].replace("TOKEN", str(token))}
    config = rule_config(tmp_path, key, **changes)
    code, out, err = check(capsys, "--config", str(config))
    expected = message.replace("{config}", str(config)).replace("TOKEN", str(token))
    assert (code, out, err) == (2, "", f"recorder check-config: {expected}")


def test_check_config_takes_a_key_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recorder.runtime.keyfile import add_ring_key

    ring = tmp_path / "keys"
    old, new = generate_master_key(), generate_master_key()
    add_ring_key(ring, old)
    add_ring_key(ring, new)
    code, out, err = check(capsys, "--key", str(ring))
    assert (code, err) == (0, "")
    assert f"key {ring} kid {new.kid} (2 keys)" in out
