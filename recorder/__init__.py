"""Passive SIP/RTP call recorder: encrypted, tamper-evident recordings from a SPAN port."""

__version__ = "0.1.0"
