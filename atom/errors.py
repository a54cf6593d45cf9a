"""The one base class of errors whose message is meant for the user: it names the file or thing and the reason.
The CLI prints these without a traceback and exits 1."""


class AtomError(Exception):
    pass
