"""The exceptions fad-edge raises for problems a user can fix; the CLI prints them as one line."""


class FadEdgeError(Exception):
    """A user-facing problem: bad input, a missing file, a mismatched model. Bugs stay real exceptions."""


class DataError(FadEdgeError):
    """A dataset file is missing, unreadable or does not follow the data contract."""


class CheckpointError(FadEdgeError):
    """A checkpoint is missing, corrupt, or not a fad-edge checkpoint."""


class ExportError(FadEdgeError):
    """Export failed or an exported artefact does not match its model."""


class BackendUnavailableError(FadEdgeError):
    """An optional backend (TensorRT, a CUDA device) is not installed or not present."""


class EngineMismatchError(FadEdgeError):
    """An engine was built for another TensorRT version or GPU and must be rebuilt."""


class StreamInputError(FadEdgeError, ValueError):
    """A live stream was given input it cannot place: a bad frame, audio dtype or layout, or timestamp.

    Also a ValueError, so code that catches bad arguments that way keeps working.
    """
