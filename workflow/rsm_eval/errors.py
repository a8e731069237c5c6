"""The one exception type the package raises for bad input or bad state.

Every message names the file, row or key at fault and what was expected, so the
command-line entry point can print it without a traceback.
"""


class RsmEvalError(Exception):
    """Bad input, bad configuration, or a product that failed verification."""
