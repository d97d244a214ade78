"""What each notification says, in zh-CN (default) and English (pure)."""

from __future__ import annotations

from typing import Any

_TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "alert": "【爱回家】{name}可能走失，{minutes}分钟前离开安全区，请协助寻找。回复1接受，2拒绝。编号{code}",
        "voice_call": "【爱回家】语音呼叫：{name}可能走失，请尽快回应。编号{code}",
        "team_call": "【爱回家】救援队：{name}走失{minutes}分钟，3分钟内无人响应，请出动。编号{code}",
        "dispatcher_call": "【爱回家】调度：{name}的事件{code}在{minutes}分钟内无人响应",
        "wide_call": "【爱回家】{name}走失{minutes}分钟，仍未找到，请附近志愿者协助。编号{code}",
        "lead_call": "【爱回家】队长：{name}走失{minutes}分钟，10分钟内无人到场。编号{code}",
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
    },
    "en": {
        "alert": "[Homeward] {name} may be lost: left the safe zone {minutes} min ago. Reply 1 to accept, 2 to decline. Code {code}",
        "voice_call": "[Homeward] Voice call: {name} may be lost, please answer. Code {code}",
        "team_call": "[Homeward] Rescue team: {name} missing {minutes} min, nobody responded in 3 min. Code {code}",
        "dispatcher_call": "[Homeward] Dispatch: incident {code} for {name} has no responder after {minutes} min",
        "wide_call": "[Homeward] {name} missing {minutes} min, still not found: volunteers nearby please help. Code {code}",
        "lead_call": "[Homeward] Team lead: {name} missing {minutes} min, nobody on site in 10 min. Code {code}",
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
    },
}

TEMPLATES = frozenset(_TEXT["en"])


def render(template: str, locale: str, values: dict[str, Any]) -> str:
    """The message text; a missing value shows as "?" rather than failing a page."""
    table = _TEXT.get(locale, _TEXT["zh-CN"])
    return table[template].format_map(_Missing(values))


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
