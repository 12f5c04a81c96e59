"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class FrameMemError(Exception):
    """Bad input or an unusable resource; the message is shown to the user as is."""
