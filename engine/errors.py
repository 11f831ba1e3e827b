"""User-facing errors.

Every error a user can cause (a bad profile, flag, MIDI file, run name or socket message) is a
``PodiumError``: the CLI prints its one-line message to stderr and exits with code 2, never a
traceback. Programming errors stay ordinary exceptions so that they do show a traceback.
"""

from __future__ import annotations


class PodiumError(Exception):
    """An error caused by user input; ``str(err)`` is the one line shown to the user."""

    exit_code = 2


class ProfileError(PodiumError):
    """A profile (TOML) or a ``--set`` override is invalid."""


class DataError(PodiumError):
    """A dataset, MIDI file or prepared-data cache is unusable."""


class RunError(PodiumError):
    """A run id, run directory or run state does not allow the requested command."""


class CheckpointError(PodiumError):
    """A checkpoint is missing, partial or does not match the run."""
