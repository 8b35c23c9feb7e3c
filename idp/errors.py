"""Domain errors raised by services/. Each edge translates them: the CLI into one line and
exit 1, hosted pages into form messages, protocol endpoints into the spec's error code."""


class IdpError(Exception):
    """Base class; the message is safe to show to the operator or user."""


class InvalidInput(IdpError):
    pass


class NotFound(IdpError):
    pass


class Conflict(IdpError):
    pass


class InvalidCredentials(IdpError):
    pass
