"""The errors in what the user gave (a data set, a config, a checkpoint, an image file).

Their messages name the file, the record and the field, so the command line prints them as one line without a
traceback; any other exception is a bug in pointdet and keeps its traceback.
"""

from __future__ import annotations


class PointdetError(Exception):
    """A problem with the user's input; the message alone says what and where."""


class ConfigError(PointdetError, ValueError):
    """An unknown config key, a value of the wrong type or out of its range, or an override that is not data."""


class DatasetError(PointdetError, ValueError):
    """A malformed annotation file; the message names the file, the record and the field."""
