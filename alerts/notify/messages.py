"""What each notification says, in zh-CN (default) and English (pure)."""

from __future__ import annotations

from typing import Any

_TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "alert": "【爱回家】{name}走失约{minutes}分钟，{place}。接单回1，拒绝回2，编号{code} {link}",
        "voice_call": "【爱回家】语音呼叫：{name}可能走失，请接听来电。编号{code}",
        "voice_script": "这里是爱回家。{name}{trigger}，约{minutes}分钟前，{place}。接受请按1，拒绝请按2，重听请按5。",
        "team_call": "【爱回家】救援队出动：{name}走失{minutes}分钟无人响应，{place}。接单回1，编号{code} {link}",
        "dispatcher_call": "【爱回家】调度：{name}的事件{code}在{minutes}分钟内无人响应",
        "wide_call": "【爱回家】{name}走失{minutes}分钟仍未找到，{place}，请协助。接单回1，编号{code} {link}",
        "lead_call": "【爱回家】队长：{name}走失{minutes}分钟无人到场，{place}。编号{code} {link}",
        "covered": "【爱回家】{name}的事件{code}已有志愿者接单，请待命。谢谢！",
        "resolved": "【爱回家】{name}的事件{code}已结束，谢谢您的帮助！",
        "cancelled": "【爱回家】{name}的事件{code}已取消，谢谢！",
        "returned_home": "【爱回家】{name}已回到家中安全区，请停止寻找。编号{code}",
        "family_alert": "【爱回家】{name}可能走失（{trigger}），志愿者已出动。编号{code}",
        "accepted": "【爱回家】志愿者已接单，正赶往{name}处。编号{code}",
        "on_site": "【爱回家】志愿者已到达{name}身边附近。编号{code}",
        "low_battery": "【爱回家】{name}的手环电量低（{battery}%），请及时充电。",
        "offline_home": "【爱回家】{name}的手环已离线（在安全区内），请检查手环。",
        "removed_home": "【爱回家】{name}的手环在家中被摘下，请检查。",
        "back_online": "【爱回家】{name}的手环已恢复在线。",
        "drill_notice": "【演练】【爱回家】{when}将为{name}进行寻人演练，志愿者会收到标明演练的短信，您无需担心。",
    },
    "en": {
        "alert": "[Homeward] {name} missing ~{minutes} min, {place}. Reply 1 accept, 2 decline. Code {code} {link}",
        "voice_call": "[Homeward] Voice call: {name} may be lost, please answer. Code {code}",
        "voice_script": "This is Homeward. {name}: {trigger}, about {minutes} minutes ago, {place}. Press 1 to accept, 2 to decline, 5 to hear this again.",
        "team_call": "[Homeward] Rescue team: {name} missing {minutes} min, no responder, {place}. Reply 1, code {code} {link}",
        "dispatcher_call": "[Homeward] Dispatch: incident {code} for {name} has no responder after {minutes} min",
        "wide_call": "[Homeward] {name} missing {minutes} min, not found yet, {place}. Reply 1 to help, code {code} {link}",
        "lead_call": "[Homeward] Team lead: {name} missing {minutes} min, nobody on site, {place}. Code {code} {link}",
        "covered": "[Homeward] Incident {code} for {name} is covered: please stand by. Thank you!",
        "resolved": "[Homeward] Incident {code} for {name} is closed. Thank you for helping!",
        "cancelled": "[Homeward] Incident {code} for {name} was cancelled. Thank you!",
        "returned_home": "[Homeward] {name} is back home in the safe zone: please stop searching. Code {code}",
        "family_alert": "[Homeward] {name} may be lost ({trigger}); volunteers are on their way. Code {code}",
        "accepted": "[Homeward] A volunteer accepted and is heading to {name}. Code {code}",
        "on_site": "[Homeward] A volunteer is on site near {name}. Code {code}",
        "low_battery": "[Homeward] {name}'s bracelet battery is low ({battery}%): please charge it.",
        "offline_home": "[Homeward] {name}'s bracelet went offline (inside a safe zone): please check it.",
        "removed_home": "[Homeward] {name}'s bracelet was taken off at home: please check.",
        "back_online": "[Homeward] {name}'s bracelet is back online.",
        "drill_notice": "[DRILL] [Homeward] A search drill for {name} starts {when}: volunteers get texts marked DRILL. No need to worry.",
    },
}

TEMPLATES = frozenset(_TEXT["en"])

# A drill's every text says so first, before anything a reader might act on.
DRILL_PREFIX = {"zh-CN": "【演练】", "en": "[DRILL] "}


def drill_prefix(locale: str) -> str:
    return DRILL_PREFIX.get(locale, DRILL_PREFIX["zh-CN"])


# Short replies for SMS answers and voice prompts.
_REPLIES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "accepted": "已接单，谢谢！请尽快前往。编号{code}",
        "declined": "已收到，谢谢。编号{code}",
        "which": "您有多个待处理事件，请回复1加编号，例如：1 {codes}",
        "none": "您当前没有待处理的事件。",
        "unknown": "未能识别。接单回1，拒绝回2，可加编号。",
        "safe": "已收到：{name}平安。事件{code}已按误报结束。",
        "confirm_cancel": "确认{name}平安、结束事件{code}？请在10分钟内回复 0 {confirm} 确认取消。",
        "bad_confirm": "确认码不正确或已过期，事件未取消。",
        "not_allowed": "{detail}",
        "voice_accepted": "已接受，谢谢您，请尽快前往。",
        "voice_declined": "已拒绝，谢谢。",
        "voice_no_input": "未收到按键，再见。",
        "voice_gone": "该事件已结束，谢谢。",
    },
    "en": {
        "accepted": "Accepted, thank you! Please head there now. Code {code}",
        "declined": "Noted, thank you. Code {code}",
        "which": "You have several open alerts: reply 1 and the code, e.g. 1 {codes}",
        "none": "You have no open alerts.",
        "unknown": "Not understood. Reply 1 to accept, 2 to decline, optionally with the code.",
        "safe": "Noted: {name} is safe. Incident {code} closed as a false alarm.",
        "confirm_cancel": "Is {name} safe? To close incident {code}, reply 0 {confirm} within 10 minutes.",
        "bad_confirm": "Wrong or expired confirmation code: nothing was cancelled.",
        "not_allowed": "{detail}",
        "voice_accepted": "Accepted. Thank you, please head there now.",
        "voice_declined": "Declined. Thank you.",
        "voice_no_input": "No key pressed. Goodbye.",
        "voice_gone": "This incident is closed. Thank you.",
    },
}

_TRIGGERS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "zone_exit": "离开安全区",
        "danger_enter": "进入危险区域",
        "sos": "按下求救键",
        "fall": "可能跌倒",
        "removed": "摘下手环",
        "device_offline": "手环离线",
        "missing": "被家属报告走失",
    },
    "en": {
        "zone_exit": "left the safe zone",
        "danger_enter": "entered a danger zone",
        "sos": "pressed SOS",
        "fall": "may have fallen",
        "removed": "took the bracelet off",
        "device_offline": "bracelet went offline",
        "missing": "reported missing",
    },
}

_DIRECTIONS = {
    "zh-CN": ("北", "东北", "东", "东南", "南", "西南", "西", "西北"),
    "en": ("N", "NE", "E", "SE", "S", "SW", "W", "NW"),
}


def reply(key: str, locale: str, values: dict[str, Any]) -> str:
    return _REPLIES.get(locale, _REPLIES["zh-CN"])[key].format_map(_Missing(values))


def trigger_name(trigger: str, locale: str) -> str:
    return _TRIGGERS.get(locale, _TRIGGERS["zh-CN"]).get(trigger, trigger)


def place(metres: float, bearing_deg: float, locale: str) -> str:
    """``距家800米东北`` / ``800 m NE of home``: where to start looking, in a few characters."""
    directions = _DIRECTIONS.get(locale, _DIRECTIONS["zh-CN"])
    direction = directions[int(((bearing_deg % 360) + 22.5) // 45) % 8]
    if locale == "en":
        distance = f"{metres / 1000:.1f} km" if metres >= 1000 else f"{round(metres, -1):.0f} m"
        return f"{distance} {direction} of home" if metres >= 30 else "near home"
    distance = f"{metres / 1000:.1f}公里" if metres >= 1000 else f"{round(metres, -1):.0f}米"
    return f"距家{distance}{direction}" if metres >= 30 else "在家附近"


_FULL_WIDTH = str.maketrans("０１２３４５６７８９＃", "0123456789#")
_ACCEPT = {"1", "Y", "YES", "是", "接", "接受", "接单"}
_DECLINE = {"2", "N", "NO", "否", "拒绝", "不"}
_SAFE = {"0", "取消", "平安", "SAFE", "CANCEL"}


def parse_reply(body: str) -> tuple[str, str | None] | None:
    """An SMS answer as (accept|decline|safe, short code or None); None if not understood."""
    text = body.strip().translate(_FULL_WIDTH).upper().replace("#", " ")
    parts = text.replace(",", " ").replace("，", " ").split()
    if not parts:
        return None
    word, rest = parts[0], parts[1:]
    # "1 4821" or "14821": the answer digit may run into the code.
    if len(rest) == 0 and word.isdigit() and len(word) == 5:
        word, rest = word[0], [word[1:]]
    code = rest[0] if rest and rest[0].isdigit() else None
    if len(rest) > 1 or (rest and code is None):
        return None
    if word in _ACCEPT:
        return "accept", code
    if word in _DECLINE:
        return "decline", code
    if word in _SAFE:
        return "safe", code
    return None


# Two concatenated SMS parts: 67 UCS-2 characters each (any Chinese text), 153 in GSM-7.
SMS_CHARS_UCS2 = 134
SMS_CHARS_GSM = 306
# What gives way, in this order, when a text would not fit: never the link or the code.
_SHRINKABLE = ("place", "name")
_NOT_SMS = frozenset({"voice_script"})


_GSM_ESCAPED = frozenset("^{}\\[~]|€")  # two septets each in GSM-7


def sms_length(text: str) -> tuple[int, int]:
    """(units, limit for two parts): GSM-7 septets for plain ASCII, else UTF-16 units."""
    if text.isascii():
        return len(text) + sum(c in _GSM_ESCAPED for c in text), SMS_CHARS_GSM
    return len(text) + sum(ord(c) > 0xFFFF for c in text), SMS_CHARS_UCS2


def sms_fits(text: str) -> bool:
    """Whether a text goes out in at most two SMS parts."""
    units, limit = sms_length(text)
    return units <= limit


def render(template: str, locale: str, values: dict[str, Any], *, drill: bool = False) -> str:
    """The message text; a missing value shows as "?" rather than failing a page.

    An SMS that would need a third part (a long name, place or public URL) is shortened
    where it hurts least: the place hint first, then the name. A drill's text starts with
    its marker, counted in the length like any other character.
    """
    texts = _TEXT.get(locale, _TEXT["zh-CN"])
    table = {template: drill_prefix(locale) + texts[template]} if drill else texts
    text = table[template].format_map(_Missing(values))
    if template in _NOT_SMS or sms_fits(text):
        return text
    shrunk = dict(values)
    ellipsis = "..." if text.isascii() else "…"  # "…" alone would turn GSM-7 into UCS-2
    original = text
    for key in _SHRINKABLE:
        while not sms_fits(text) and len(str(shrunk.get(key, ""))) > len(ellipsis) + 1:
            shrunk[key] = str(shrunk[key])[: -len(ellipsis) - 1] + ellipsis
            text = table[template].format_map(_Missing(shrunk))
    # Cut to the bone and still too long (a very long link): better whole than mangled.
    return text if sms_fits(text) else original


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
