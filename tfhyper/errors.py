"""Exceptions raised by tfhyper."""


class TfhyperError(Exception):
    """Base class of tfhyper's errors."""


class BitstreamError(TfhyperError, ValueError):
    """A bitstream is malformed, truncated, corrupted, or was written by another model or format version.

    The one exception that decoding a bad, truncated or foreign bitstream raises.
    """
