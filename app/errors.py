"""The few specific exceptions of the project; each message shows the offending value.

The HTTP layer maps them to status codes (4xx for caller mistakes, 503 for ``ModelNotReady``).
"""


class LookalikeError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(LookalikeError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class SchemaError(LookalikeError):
    """An input table is missing, or lacks a column, or a column has the wrong type."""


class SeedError(LookalikeError):
    """A seed list cannot be used (empty, too few known users, malformed lines)."""


class ModelNotReady(LookalikeError):
    """No current model or score table is registered yet."""


class JobNotFound(LookalikeError):
    """An audience-extension job id is unknown (or belongs to another API key)."""
