"""Twilio webhooks: SMS replies, the voice step's TwiML, delivery status callbacks.

Every request must carry a valid ``X-Twilio-Signature`` computed over
``HOMEWARD_PUBLIC_URL`` + path (+ query) and the form: anything else is 403. A signature
does not expire, so a captured request could be sent again: each message (``MessageSid``),
keypress (``CallSid`` + step) and status is acted on once; a replay gets a 200 with an
empty answer (Twilio then stops retrying) and changes nothing.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Gather, VoiceResponse

from alerts import replies
from alerts.incidents.config import AlertsConfig, config_from
from locator.core.deps import ContextDep, SyncRedisDep
from locator.core.errors import Forbidden, HomewardError

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"], include_in_schema=True)
VOICE_LANGUAGE = {"zh-CN": "zh-CN", "en": "en-US"}


class _NotConfigured(HomewardError):
    status_code = 503


async def _verified(request: Request, ctx: ContextDep, signature: str | None) -> dict[str, str]:
    """The webhook's form if Twilio signed it; 403 otherwise."""
    settings = ctx.settings
    if not (settings.twilio_auth_token and settings.public_url):
        raise _NotConfigured("Twilio webhooks need HOMEWARD_TWILIO_AUTH_TOKEN and PUBLIC_URL")
    form = {k: str(v) for k, v in (await request.form()).items()}
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    validator = RequestValidator(settings.twilio_auth_token)
    if not signature or not validator.validate(url, form, signature):
        raise Forbidden("missing or bad X-Twilio-Signature")
    return form


def _config(ctx: ContextDep) -> AlertsConfig:
    return config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url)


Signature = Annotated[str | None, Header(alias="X-Twilio-Signature")]
XML = "application/xml"
T = TypeVar("T")


async def _once(redis: SyncRedisDep, kind: str, ident: str, act: Callable[[], T]) -> T | None:
    """``act()`` unless this webhook was acted on before (None then)."""

    def run() -> T | None:
        if not replies.first_time(redis, kind=kind, ident=ident):
            return None
        try:
            return act()
        except BaseException:
            replies.forget(redis, kind=kind, ident=ident)  # Twilio's retry gets another go
            raise

    return await anyio.to_thread.run_sync(run)


def _empty() -> Response:
    return Response(str(MessagingResponse()), media_type=XML)


@router.post("/sms")
async def sms(
    request: Request, ctx: ContextDep, redis: SyncRedisDep, signature: Signature = None
) -> Response:
    """A reply to an alert: 1/Y/是 accept, 2/N/否 decline (plus the code), 0/取消 safe."""
    form = await _verified(request, ctx, signature)
    cfg = _config(ctx)
    text = await _once(
        redis,
        "sms",
        form.get("MessageSid", ""),
        lambda: replies.sms_reply(
            redis, cfg, phone=form.get("From", ""), body=form.get("Body", "")
        ),
    )
    if text is None:
        return _empty()
    answer = MessagingResponse()
    answer.message(text)
    return Response(str(answer), media_type=XML)


@router.post("/voice")
async def voice(
    request: Request,
    ctx: ContextDep,
    redis: SyncRedisDep,
    attempt: str,
    noinput: int = 0,
    signature: Signature = None,
) -> Response:
    """The voice step: read the alert, then 1 accept, 2 decline, 5 repeat."""
    form = await _verified(request, ctx, signature)
    cfg = _config(ctx)
    digits = form.get("Digits")

    def answer_call() -> tuple[str, str | None]:
        return replies.voice_answer(
            redis, cfg, attempt=attempt, digits=digits, no_input=bool(noinput)
        )

    if noinput or digits in replies.VOICE_ACTIONS:
        # Only a step that changes something is claimed: the script and "5" (repeat) are
        # asked for again and again within one call.
        call = form.get("CallSid", "")
        step = f"{call}:{attempt}:{'-' if noinput else digits}" if call else ""
        answered = await _once(redis, "voice", step, answer_call)
        if answered is None:
            return Response(str(VoiceResponse()), media_type=XML)
        _, say = answered
    else:
        _, say = await anyio.to_thread.run_sync(answer_call)
    language = VOICE_LANGUAGE.get(cfg.locale, "zh-CN")
    answer = VoiceResponse()
    if say is not None:
        answer.say(say, language=language)
        answer.hangup()
        return Response(str(answer), media_type=XML)
    script = await anyio.to_thread.run_sync(lambda: replies.script(redis, cfg, attempt=attempt))
    here = str(request.url.path) + "?" + urllib.parse.urlencode({"attempt": attempt})
    gather = Gather(num_digits=1, action=here, method="POST", timeout=8)
    gather.say(script, language=language)
    answer.append(gather)
    # No key within the timeout: Twilio goes on to the next verb, which records no answer.
    answer.redirect(here + "&noinput=1", method="POST")
    return Response(str(answer), media_type=XML)


@router.post("/status")
async def status(
    request: Request,
    ctx: ContextDep,
    redis: SyncRedisDep,
    attempt: str,
    signature: Signature = None,
) -> dict[str, str]:
    """Delivery status of a message or call; not delivered → the recipient's next channel."""
    form = await _verified(request, ctx, signature)
    cfg = _config(ctx)
    sid = form.get("MessageSid") or form.get("CallSid") or ""
    state = form.get("MessageStatus") or form.get("CallStatus") or ""
    result = await _once(
        redis,
        "status",
        f"{sid}:{attempt}:{state}" if sid else "",
        lambda: replies.status_callback(redis, cfg, attempt=attempt, params=form),
    )
    return {"result": "duplicate" if result is None else result}
