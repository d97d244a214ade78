"""Structured key-value logs via structlog, one line per event, with secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

# `scheme://user:password@host` — the password goes, the rest stays useful for debugging.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.I)
# Field names whose value is a secret whatever it looks like.
_SECRET_FIELD = re.compile(r"pass(word)?|secret|token|auth|api_key|private_key|cookie", re.I)
MASK = "***"


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {k: MASK if _secret_key(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_FIELD.search(key))


def _mask_processor(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Runs last before rendering, on our lines and on every library's (uvicorn, paho...)."""
    for key, value in list(event.items()):
        event[key] = MASK if _secret_key(key) and value else _masked(value)
    return event


def configure_logging(
    level: str = "info",
    *,
    json: bool | None = None,
    file: Path | None = None,
    console_level: str | None = None,
) -> None:
    """Route stdlib and structlog records through one key-value renderer.

    Everything at ``level`` goes to stderr, or, with ``file``, as JSON lines to that file
    while stderr keeps only ``console_level`` and above (the demo's terminal is for people).
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    def formatter(as_json: bool) -> logging.Formatter:
        renderer: structlog.types.Processor = (
            structlog.processors.JSONRenderer(ensure_ascii=False)
            if as_json
            else structlog.dev.ConsoleRenderer(colors=False)
        )
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _mask_processor,
                renderer,
            ],
        )

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter(use_json if file is None else False))
    handlers: list[logging.Handler] = [console]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(file, encoding="utf-8")
        to_file.setFormatter(formatter(True))
        handlers.append(to_file)
        console.setLevel((console_level or "error").upper())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # Library warnings (e.g. urllib3's DependencyWarning when requests probes for SOCKS
    # support) become log lines like any other, not raw text on the demo's terminal.
    logging.captureWarnings(True)
    # httpx logs every request at info: the demo and the Twilio client would drown the rest.
    for noisy in ("amqtt", "transitions", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
