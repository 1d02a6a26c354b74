"""Typed errors. The CLI translates them to messages and exit codes in one place."""

from __future__ import annotations


class BridgeError(Exception):
    """cdc-bridge failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.__class__.__name__)


class UserError(BridgeError):
    """The command was given something it cannot use."""

    exit_code = 2


class ConfigError(UserError):
    """The configuration is invalid.

    Carries every problem found, so the user fixes them in one go.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


class PortInUse(UserError):
    """A configured listen address cannot be bound."""

    def __init__(self, key: str, listen: str, reason: str) -> None:
        self.key = key
        self.listen = listen
        self.reason = reason
        super().__init__(f"{key}: cannot listen on {listen} ({reason})")


class IdentifierError(UserError):
    """An SQL identifier cannot be used safely."""


class FilterError(UserError):
    """A `where` filter is not an allowed SQL expression."""


class DatabaseError(BridgeError):
    """The database refused or could not be reached."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class IncompleteInstall(DatabaseError):
    """The bridge schema lacks something the install writes (a row, a table)."""


class ProblemsFound(BridgeError):
    """A check found problems (exit code 1)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TokenError(BridgeError):
    """The peer's OAuth2 token endpoint gave no token."""


class RequestFailed(BridgeError):
    """The peer did not answer: connection refused or reset, timeout, TLS.

    The message says why, in words safe for logs (`peer.http.describe_error`).
    """


class Refused(BridgeError):
    """`serve` refuses a whole request with an HTTP status and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PollError(BridgeError):
    """Reading the peer application's list endpoint failed."""


class Unmapped(BridgeError):
    """A value that a field's value map does not cover: never guessed, refused."""

    def __init__(self, entity: str, field: str, value: object, where: str) -> None:
        self.entity, self.field, self.value = entity, field, value
        super().__init__(
            f"{entity}.{field}: value {value!r} has no mapping {where}; fix: add it to the "
            "field's `map`"
        )


class Unresolved(BridgeError):
    """A reference to a record that has not arrived here (it is never applied dangling)."""


class EmbeddedServerError(BridgeError):
    """The embedded PostgreSQL server could not be started."""


class DemoError(BridgeError):
    """The demo could not complete."""


class PeerReadError(BridgeError):
    """The peer's copy of the table could not be read."""


class NoSuchConflict(UserError):
    """No conflict with that id."""


class Rejected(Exception):
    """A change the config does not allow; the message is the reason sent back."""


class SignatureError(Exception):
    """The batch's signature or timestamp does not check out."""


class CodecError(ValueError):
    """The text is not JSON, or the value cannot be written as JSON."""


class BodyError(ValueError):
    """A change's value cannot be put in the body as the mapping asks."""
