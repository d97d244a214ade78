"""Errors that carry their HTTP status, so one handler turns any of them into a response."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HomewardError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500

    def __init__(self, detail: Any = "internal error") -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class ConfigError(HomewardError):
    """A setting or the environment makes the process unable to start."""


class NotFound(HomewardError):
    status_code = 404


class Forbidden(HomewardError):
    status_code = 403


class Unauthorized(HomewardError):
    status_code = 401


class Conflict(HomewardError):
    status_code = 409


class Unprocessable(HomewardError):
    """A body that parses but breaks a rule; the detail names the field like FastAPI's own."""

    status_code = 422

    def __init__(
        self,
        loc: Sequence[str | int],
        message: str,
        kind: str = "value_error",
        *,
        where: str = "body",
    ) -> None:
        super().__init__([{"loc": [where, *loc], "msg": message, "type": kind}])
        self.loc = list(loc)
        self.message = message


class TooManyRequests(HomewardError):
    """A rate limit: the answer says (``Retry-After``) when to try again."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)
        self.headers = {"Retry-After": str(self.retry_after_s)}
