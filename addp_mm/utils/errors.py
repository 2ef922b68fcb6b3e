"""The error a checkpoint that cannot be read or used raises (one line)."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, refused or does not fit the model."""
