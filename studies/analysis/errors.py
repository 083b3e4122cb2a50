"""The one error the analysis raises: input a researcher must fix (a missing column, an unknown design).

Degenerate but valid data (one condition, a condition left with no ratings) never raises; the result says
why a number is missing instead.
"""


class AnalysisError(ValueError):
    """Bad analysis input, with a message that says what was wrong and how to fix it."""
