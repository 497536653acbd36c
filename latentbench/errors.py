"""The exception classes the command line reports as one line (everything else keeps its traceback).

``LatentbenchError`` marks a problem with the user's input: a config key, a missing or corrupt
file, a weight that is not on disk, a training run that diverged. The CLI prints such an error
as ``latentbench <command>: error: <message>`` and exits 1 (``LATENTBENCH_DEBUG=1`` re-raises
it); any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations


class LatentbenchError(Exception):
    """A user-facing problem, reported in one line by the CLI."""


class InputError(LatentbenchError, ValueError):
    """An input file or setting of one job that the job cannot use (names the file or key)."""


class TrainingDiverged(LatentbenchError, FloatingPointError):
    """A training loop met a non-finite loss or weights; the last good checkpoint is kept."""


class MissingInput(LatentbenchError, FileNotFoundError):
    """An input file a job needs does not exist (names it)."""


class WeightsError(LatentbenchError, ValueError):
    """A weights file that cannot be read or does not match its model (one line: file and first keys)."""
