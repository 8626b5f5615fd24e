"""The project's exception families.

Wire input only ever raises `DecodeError` (h11's discipline: parse or raise the
documented error, nothing else). Stored data that fails authentication raises
`IntegrityError`. Operator mistakes (config, key files) raise errors whose
message is one line naming the problem.
"""


class RecorderError(Exception):
    """Base of every error the recorder raises on purpose."""


class DecodeError(RecorderError):
    """Bad bytes from the wire; `layer` and `reason` are short fixed words (counter labels)."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason


class IntegrityError(RecorderError):
    """Stored data failed authentication or does not match what was recorded about it."""


class KeyFileError(RecorderError):
    """A master key file is missing, malformed or readable by others."""


class ConfigError(RecorderError):
    """A configuration value is wrong; the message names the setting."""


class ArchiveError(RecorderError):
    """The archive (files, index, key store) is missing or inconsistent."""
