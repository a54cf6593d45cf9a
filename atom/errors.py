"""The one base class of errors whose message is meant for the user: it names the file or thing and the reason.
The CLI prints these without a traceback and exits 1."""


class AtomError(Exception):
    pass


class ConfigError(AtomError, ValueError):
    """A setting is missing or has a value that cannot work; the message says which and what would."""


class RegistryError(AtomError, LookupError):
    """A registered model cannot be found, or lacks what the command needs (e.g. its dataset lineage)."""
