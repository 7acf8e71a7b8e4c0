"""The exceptions of bad parameters: each carries the parameter it is about.

``ParameterError`` is a ValueError (a bad value) and ``ParameterTypeError`` a
TypeError (a bad type); both have ``.parameter``, the name of the offending
argument as the public function spells it (``'stride'``, ``'weight'``...), so a
caller such as the command line maps an error to an option without reading
the message.
"""

from __future__ import annotations

__all__ = ["ParameterError", "ParameterTypeError"]


class ParameterError(ValueError):
    """A parameter has a bad value; ``.parameter`` names it.

    Examples
    --------
    >>> err = ParameterError("stride", "stride must be >= 1, got 0")
    >>> err.parameter, str(err)
    ('stride', 'stride must be >= 1, got 0')
    """

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


class ParameterTypeError(TypeError):
    """A parameter has a bad type; ``.parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter
