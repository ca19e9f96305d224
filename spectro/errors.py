"""One exception root, so callers can catch everything spectro raises on purpose."""


class SpectroError(Exception):
    """Base class of every error spectro raises deliberately."""


class ConfigError(SpectroError, ValueError):
    """A setting or argument is invalid; the message names it, its value and the rule."""


class DataError(SpectroError):
    """Input data (audio, corpus tree, manifest, image folder) cannot be used as given."""


class StorageError(SpectroError):
    """The machine, not the input, stopped a job: a full disk, a read-only or vanished output, a
    permission refused. Nothing finished is lost; fix the cause and run the same command again."""
