"""Many sensors, one bucket, one database: two sensor processes record different
captures at the same time; a third process, on no sensor, lists, searches, verifies and
exports every recording from the shared store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.scale.helpers import calls_capture, config_text, write_config
from tests.scale.servers import ACCESS_KEY, SECRET_KEY, Seaweed

PAIRS_A = [("+4977710", "+4930555101"), ("+4977711", "+4930200")]
PAIRS_B = [("+4977712", "+4930555102"), ("+4977713", "+4930201")]


def _recorder(*args: object, config: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    env.pop("RECORDER_CONFIG", None)
    if config is not None:
        env["RECORDER_CONFIG"] = str(config)
    return subprocess.Popen(
        [sys.executable, "-m", "recorder", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(*args: object, config: Path | None = None) -> tuple[int, str, str]:
    proc = _recorder(*args, config=config)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_two_sensors_and_an_office_node(
    seaweed: Seaweed, bucket: str, dsn: str, tmp_path: Path
) -> None:
    key = tmp_path / "master.key"  # one master key for the bank (a ring would do as well)
    assert _run("keygen", key)[0] == 0
    sensors = {}
    for name, first, pairs in (("sensor-a", 1, PAIRS_A), ("sensor-b", 10, PAIRS_B)):
        cfg = tmp_path / f"{name}.yaml"
        write_config(cfg, config_text(seaweed, bucket, sensor=name, dsn=dsn))
        pcap = calls_capture(tmp_path / f"{name}.pcap", first, pairs)
        sensors[name] = (cfg, pcap)
    procs = [
        _recorder("replay", pcap, "--archive", tmp_path / name, "--key", key, "--config", cfg)
        for name, (cfg, pcap) in sensors.items()
    ]  # both at once, into one bucket and one database
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "calls recorded    2" in out

    office = tmp_path / "office.yaml"
    write_config(office, config_text(seaweed, bucket, sensor="office-1", dsn=dsn))
    node = tmp_path / "office"
    code, out, err = _run("list", "--archive", node, "--json", config=office)
    assert code == 0, err
    rows = json.loads(out)
    assert sorted((r["sensor_id"], r["caller"]) for r in rows) == sorted(
        [("sensor-a", c) for c, _ in PAIRS_A] + [("sensor-b", c) for c, _ in PAIRS_B]
    )
    keys = sorted(o["Key"] for o in seaweed.client().list_objects_v2(Bucket=bucket)["Contents"])
    day = "2023/11/14"
    assert [k for k in keys if k.startswith("recordings/")] == sorted(
        f"recordings/{r['sensor_id']}/{day}/{r['id']}.rec" for r in rows
    )
    assert {k.split("/")[1] for k in keys if k.startswith("audit/")} == {"sensor-a", "sensor-b"}

    code, out, err = _run(
        "search", "--number", "+4930555102", "--archive", node, "--json", config=office
    )
    assert code == 0, err
    assert [r["caller"] for r in json.loads(out)] == ["+4977712"]

    code, out, err = _run("verify", "--archive", node, "--key", key, config=office)
    assert code == 0, out + err
    assert "OK: 4/4 recordings authentic" in out
    assert "note shipped audit trail of sensor-a:" in out
    assert "note shipped audit trail of sensor-b:" in out

    code, out, err = _run("keys", "list", "--archive", node, "--key", key, config=office)
    assert code == 0, err
    assert out.split()[1:] == ["current", "wraps", "4", "file", "key(s)"]  # every sensor's

    # Export from the office equals export from a plain local archive of the same capture.
    target = next(r for r in rows if r["caller"] == "+4977712")
    wav = tmp_path / "office.wav"
    code, out, err = _run(
        "export", target["id"], "-o", wav, "--archive", node, "--key", key, config=office
    )
    assert code == 0, err
    local = tmp_path / "local"
    assert _run("replay", sensors["sensor-b"][1], "--archive", local, "--key", key)[0] == 0
    code, out, _ = _run("list", "--archive", local, "--json")
    twin = next(r for r in json.loads(out) if r["caller"] == "+4977712")
    assert (
        _run("export", twin["id"], "-o", tmp_path / "local.wav", "--archive", local, "--key", key)[
            0
        ]
        == 0
    )
    assert wav.read_bytes() == (tmp_path / "local.wav").read_bytes()
    assert len(wav.read_bytes()) > 44 + 8000  # half a second of stereo audio and more
