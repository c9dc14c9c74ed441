"""Errors that reach the user: each says what went wrong and how to fix it."""


class FrShieldError(Exception):
    """Base class for every error fr_shield reports to a user."""


class WeightError(FrShieldError):
    """A weight file is missing or fails its checksum."""


class ImageError(FrShieldError):
    """An image cannot be read or is not supported."""


class DataError(FrShieldError):
    """A dataset folder is missing, empty or too small for the request."""


class ConfigError(FrShieldError, ValueError):
    """An unknown config, preset, attack or model name, or a setting out of range."""
