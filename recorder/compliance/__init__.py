"""Compliance controls: which calls are recorded, retention, legal hold, PCI pause."""
