"""Errors that the CLI turns into one line on stderr and a documented exit code.

Library code raises these instead of printing, so the same checks serve the CLI, scripts and
tests; anything else that escapes is a bug and keeps its traceback.
"""


class NasctlError(Exception):
    """A failure of the job itself (exit code 1)."""

    exit_code = 1


class UserError(NasctlError):
    """Bad input: unknown space/op/device, malformed file, wrong layer count (exit code 2)."""

    exit_code = 2


class DeviceUnreachable(NasctlError):
    """The device could not be reached or its agent could not be started (exit code 3)."""

    exit_code = 3


class OutputError(NasctlError):
    """An output could not be written (a full disk, a read-only folder): exit 1 when the command
    had already written other work, which is kept; exit 2 when it had written nothing."""

    def __init__(self, message: str, kept: bool):
        super().__init__(message)
        self.exit_code = 1 if kept else 2
