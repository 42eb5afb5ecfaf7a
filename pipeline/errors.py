"""User-facing errors: one line that says what is wrong and names the fix.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class DvitError(Exception):
    """Base of every error a user can fix by changing their input."""


class ConfigError(DvitError, ValueError):
    pass


class DataError(DvitError):
    pass


class CheckpointError(DvitError):
    pass


class ManifestError(DvitError):
    pass
