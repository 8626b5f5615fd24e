"""sipp peers on loopback: a UAC and a UAS whose scenarios each play a PCMA pcap we
generate (so the audio sent is known to the byte), each call on its own media ports.

(sipp's built-in UAS answers every call with the same media port, and `-rtp_echo` only
works there: concurrent calls would then share one RTP endpoint, which no recorder can
tell apart by address. Our UAS answers with [auto_media_port] instead.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from recorder.core.model import Frame
from tests.builders import NS, rtp, udp_frame, write_pcap

# A UAC call: INVITE offering PCMA, ACK, play the pcap, wait, BYE. sipp rewrites the
# pcap's addresses and ports to the negotiated media endpoints.
UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call with PCMA audio from a pcap">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+4930111@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+4930111@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <nop><action><exec play_pcap_audio="@PCAP@"/></action></nop>
  <pause milliseconds="@PAUSE_MS@"/>
  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+4930111@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200"/>
</scenario>
"""


UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer with PCMA audio from a pcap">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]U[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 2 2 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]></send>
  <recv request="ACK"/>
  <nop><action><exec play_pcap_audio="@PCAP@"/></action></nop>
  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]></send>
</scenario>
"""


def pcma_payload(i: int, side: int) -> bytes:
    return bytes((i * 13 + k * (7 + 2 * side) + 31 * side) % 256 for k in range(160))


def write_audio_pcap(path: Path, packets: int, side: int = 0) -> list[bytes]:
    """A pcap of `packets` 20 ms PCMA RTP packets; returns their payloads."""
    t0 = 1_700_000_000 * NS
    payloads = [pcma_payload(i, side) for i in range(packets)]
    frames = [
        Frame(
            t0 + i * 20_000_000,
            1,
            udp_frame("10.1.1.1", 7000, "10.1.1.2", 7002, rtp(8, i, 160 * i, 0x4242, p)),
        )
        for i, p in enumerate(payloads)
    ]
    write_pcap(path, frames)
    return payloads


def write_scenarios(
    folder: Path, caller_pcap: Path, callee_pcap: Path, pause_ms: int
) -> tuple[Path, Path]:
    """(UAC scenario, UAS scenario) playing the two pcaps."""
    uac = folder / "uac_pcma.xml"
    uac.write_text(
        UAC_SCENARIO.replace("@PCAP@", str(caller_pcap)).replace("@PAUSE_MS@", str(pause_ms))
    )
    uas = folder / "uas_pcma.xml"
    uas.write_text(UAS_SCENARIO.replace("@PCAP@", str(callee_pcap)))
    return uac, uas


def start_uas(
    sipp: str, scenario: Path, port: int, media_port: int, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1",
             "-mp", str(media_port), "-nostdin", "-max_socket", "60000"],
            stdout=out, stderr=out,
        )  # fmt: skip


def uac_command(
    sipp: str, scenario: Path, uas_port: int, port: int, media_port: int, calls: int, rate: float
) -> list[str]:
    return [
        sipp, f"127.0.0.1:{uas_port}", "-sf", str(scenario), "-i", "127.0.0.1",
        "-p", str(port), "-mp", str(media_port), "-m", str(calls), "-r", str(rate),
        "-nostdin", "-max_socket", "60000",
    ]  # fmt: skip
