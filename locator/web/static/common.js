// Homeward pages: shared helpers (no framework, no build step, no CDN).
"use strict";

const HW = (() => {
  const I18N = {
    "zh-CN": {
      login: "登录", token: "访问令牌", paste_token: "粘贴管理员/调度员/家属/志愿者令牌",
      logout: "退出", lang: "English", console: "调度台", incidents: "事件",
      no_incidents: "当前没有进行中的事件", respond: "响应", on_site: "到场",
      status_open: "待响应", status_acknowledged: "已接单", status_on_site: "已到场",
      status_resolved: "已结束", status_cancelled: "已取消", breached: "超时",
      notify_more: "追加通知", call_team: "呼叫救援队", cancel: "取消事件", resolve: "结束事件",
      handoff: "协查单", replay: "轨迹回放", notifications: "通知记录", degraded: "系统降级",
      system_ok: "系统正常", outcome: "结果", found_safe: "平安找到", returned_home: "已回家",
      found_injured: "找到但受伤", handed_to_police: "移交警方", false_alarm: "误报", other: "其他",
      elders: "老人", volunteers: "志愿者", stale: "位置过期", fresh: "位置实时",
      responders: "响应人员", timeline: "时间线", search_area: "搜索范围", confirm: "确认",
      channel: "渠道", recipient: "接收人", result: "结果", since_exit: "分钟前",
      suggested: "建议结束为", map_no_tiles: "地图底图无法加载，仍显示区域与标记",
      accept: "我去找（接单）", decline: "无法前往", arrived: "我已到达", found: "已找到",
      withdraw: "撤回", share_location: "共享我的位置", sharing: "正在共享位置",
      my_alerts: "我的求助", on_duty: "值班中", quiet_hours: "免打扰时段", navigate: "导航",
      really: "确定吗？", done: "完成", back: "返回", family: "家属门户", loading: "加载中…",
      forbidden: "无权访问", expired: "登录已过期，请重新登录",
      notifications_log: "通知日志（全部事件）", time: "时间", guardian: "家属", dispatcher: "调度员",
      kind_paired: "结对志愿者", kind_nearby: "附近志愿者", kind_team: "救援队", kind_wide: "扩大范围", kind_lead: "队长",
      ch_sms: "短信", ch_voice: "语音电话", ch_mqtt: "App 推送", ch_webpush: "浏览器推送", ch_log: "记录",
      n_queued: "排队中", n_sending: "发送中", n_retry: "稍后重试", n_sent: "已发送", n_delivered: "已送达",
      n_failed: "失败", n_undelivered: "未送达", n_unknown: "结果未知", n_no_answer: "无人接听",
      n_answered: "已接听", n_superseded: "已无需发送",
    },
    en: {
      login: "Log in", token: "Access token", paste_token: "Paste an admin, dispatcher, guardian or volunteer token",
      logout: "Log out", lang: "中文", console: "Dispatch console", incidents: "Incidents",
      no_incidents: "No open incidents", respond: "Respond", on_site: "On site",
      status_open: "Open", status_acknowledged: "Acknowledged", status_on_site: "On site",
      status_resolved: "Resolved", status_cancelled: "Cancelled", breached: "breached",
      notify_more: "Notify more", call_team: "Call the team", cancel: "Cancel", resolve: "Resolve",
      handoff: "Hand-off pack", replay: "Track replay", notifications: "Notifications", degraded: "System degraded",
      system_ok: "System OK", outcome: "Outcome", found_safe: "Found safe", returned_home: "Returned home",
      found_injured: "Found injured", handed_to_police: "Handed to police", false_alarm: "False alarm", other: "Other",
      elders: "Elders", volunteers: "Volunteers", stale: "stale position", fresh: "live position",
      responders: "Responders", timeline: "Timeline", search_area: "Search area", confirm: "Confirm",
      channel: "Channel", recipient: "Recipient", result: "Result", since_exit: "min ago",
      suggested: "Suggested outcome", map_no_tiles: "Map tiles unavailable: zones and markers still shown",
      accept: "I'll go (accept)", decline: "I can't go", arrived: "I'm here", found: "Found",
      withdraw: "Withdraw", share_location: "Share my location", sharing: "Sharing location",
      my_alerts: "My alerts", on_duty: "On duty", quiet_hours: "Quiet hours", navigate: "Navigate",
      really: "Are you sure?", done: "Done", back: "Back", family: "Family portal", loading: "Loading…",
      forbidden: "Not allowed", expired: "Session expired: please log in again",
      notifications_log: "Notifications log (all incidents)", time: "Time", guardian: "Guardian", dispatcher: "Dispatcher",
      kind_paired: "paired", kind_nearby: "nearby", kind_team: "rescue team", kind_wide: "wider area", kind_lead: "team lead",
      ch_sms: "SMS", ch_voice: "Voice call", ch_mqtt: "App push", ch_webpush: "Web push", ch_log: "Log",
      n_queued: "queued", n_sending: "sending", n_retry: "retrying", n_sent: "sent", n_delivered: "delivered",
      n_failed: "failed", n_undelivered: "undelivered", n_unknown: "fate unknown", n_no_answer: "no answer",
      n_answered: "answered", n_superseded: "no longer needed",
    },
  };
  // Volunteer page and family portal.
  Object.assign(I18N["zh-CN"], {
    v_title: "爱回家 · 寻人求助", code: "编号", confirm_hint: "打开此页不会接单：请按下方按钮确认。", note: "备注（可选）",
    v_closed: "该事件已结束，谢谢您的关注。", last_position: "最后位置", my_settings: "我的设置", save: "保存", clear: "清除",
    push_optin: "开启浏览器推送（短信仍会发送）", push_on: "已开启推送", push_failed: "无法开启推送", error: "出错了",
    missing_for: "已走失约 {m} 分钟", last_seen: "最后看到", v_on_site: "您已到场，请寻找老人。", v_accepted: "已接单，请尽快前往并共享位置。",
    v_declined: "已记录您无法前往，谢谢。", v_covered: "已有志愿者接单，请待命。", location_sent: "位置已发送", location_denied: "无法获取位置",
    no_alerts: "当前没有需要您处理的求助", r_notified: "待回复", r_accepted: "已接单", r_declined: "已拒绝", r_withdrawn: "已撤回",
    r_arrived: "已到场", r_stood_down: "已待命", saved: "已保存", v_only: "此页面供志愿者使用",
    f_my_elders: "我的家人", f_register: "登记老人", f_name: "姓名", f_address: "住址", f_home_hint: "在地图上点选家的位置（或填写经纬度）",
    f_photo: "照片网址", f_description: "外貌特征（衣着、身高、习惯）", f_medical: "病史与用药", f_guardians: "监护人（可多位）",
    f_add_guardian: "添加监护人", f_g_name: "姓名", f_g_phone: "手机号", f_g_relation: "关系", f_zones: "安全区域",
    f_circle: "圆形", f_polygon: "多边形", f_safe: "安全区", f_danger: "危险区", f_zone_name: "区域名称", f_radius: "半径（米，至少100）",
    f_hint_circle: "在地图上点击圆心", f_hint_polygon: "在地图上依次点击至少3个顶点", f_night: "仅夜间生效（夜间时段）",
    f_schedule: "生效时段", f_save_zone: "保存区域", f_always: "全天", f_every_day: "每天", delete: "删除",
    day1: "周一", day2: "周二", day3: "周三", day4: "周四", day5: "周五", day6: "周六", day7: "周日",
    f_device: "定位手环", f_device_id: "设备编号", f_claim_code: "激活码（印在包装盒上）", f_protocol: "协议", f_native: "手环（原生）", f_ot_ext: "OwnTracks 用户/设备（user/device）",
    f_pair: "绑定设备", f_no_device: "尚未绑定设备", f_online: "在线", f_offline: "离线", f_battery: "电量",
    f_photo_file: "照片（拍照或从相册选择）", f_photo_change: "更换照片", f_photo_failed: "照片未能上传，可在老人页面更换",
    f_ot_scan: "用手机相机扫描二维码，在 OwnTracks 中打开即完成设置", f_ot_open: "在本机 OwnTracks 中打开设置",
    f_ot_settings: "或在 OwnTracks 应用“设置 → 连接”中填写：", f_ot_mode: "模式", f_ot_monitoring: "监控模式", copy: "复制",
    f_home: "家", f_position: "当前位置", f_no_position: "暂无位置", f_pause: "暂停监护（“他和我在一起”）", f_pause_reason: "原因",
    f_pause_go: "暂停", f_resume: "恢复监护", f_paused_until: "已暂停至", f_missing: "报告走失", f_missing_note: "最后看到时的情况",
    f_missing_sent: "已报告，正在通知志愿者", f_notices: "提醒（低电量、离线）", f_no_notices: "暂无提醒",
    trigger_zone_exit: "离开安全区", trigger_danger_enter: "进入危险区", trigger_sos: "SOS 求救", trigger_fall: "跌倒",
    trigger_removed: "手环被摘下", trigger_device_offline: "手环离线", trigger_missing: "家属报告走失",
    f_incident_open: "走失事件进行中", f_incident_last: "最近一次事件",
  });
  Object.assign(I18N.en, {
    v_title: "Homeward · Help find", code: "Code", confirm_hint: "Opening this page accepts nothing: confirm with a button below.", note: "Note (optional)",
    v_closed: "This incident is closed. Thank you.", last_position: "Last position", my_settings: "My settings", save: "Save", clear: "Clear",
    push_optin: "Turn on browser push (SMS still comes)", push_on: "Push is on", push_failed: "Could not turn on push", error: "Error",
    missing_for: "Missing for about {m} min", last_seen: "last seen", v_on_site: "You are on site: look for her.", v_accepted: "Accepted: head there now and share your location.",
    v_declined: "Noted that you can't go. Thank you.", v_covered: "Someone accepted: please stand by.", location_sent: "Location sent", location_denied: "Location unavailable",
    no_alerts: "No alerts for you right now", r_notified: "awaiting answer", r_accepted: "accepted", r_declined: "declined", r_withdrawn: "withdrawn",
    r_arrived: "on site", r_stood_down: "standing by", saved: "Saved", v_only: "This page is for volunteers",
    f_my_elders: "My family", f_register: "Register an elder", f_name: "Name", f_address: "Address", f_home_hint: "Tap home on the map (or type the coordinates)",
    f_photo: "Photo URL", f_description: "Appearance (clothes, height, habits)", f_medical: "Medical notes and medication", f_guardians: "Guardians (one or more)",
    f_add_guardian: "Add a guardian", f_g_name: "Name", f_g_phone: "Mobile", f_g_relation: "Relation", f_zones: "Safe zones",
    f_circle: "Circle", f_polygon: "Polygon", f_safe: "Safe zone", f_danger: "Danger zone", f_zone_name: "Zone name", f_radius: "Radius (m, at least 100)",
    f_hint_circle: "Tap the centre on the map", f_hint_polygon: "Tap at least 3 corners on the map", f_night: "Only at night (a schedule)",
    f_schedule: "Active hours", f_save_zone: "Save zone", f_always: "Always", f_every_day: "every day", delete: "Delete",
    day1: "Mon", day2: "Tue", day3: "Wed", day4: "Thu", day5: "Fri", day6: "Sat", day7: "Sun",
    f_device: "Bracelet", f_device_id: "Device id", f_claim_code: "Claim code (printed on the box)", f_protocol: "Protocol", f_native: "Bracelet (native)", f_ot_ext: "OwnTracks user/device",
    f_pair: "Pair device", f_no_device: "No device paired yet", f_online: "online", f_offline: "offline", f_battery: "battery",
    f_photo_file: "Photo (take one or pick from the album)", f_photo_change: "Change the photo", f_photo_failed: "The photo was not uploaded; change it on her page",
    f_ot_scan: "Scan with the phone's camera and open in OwnTracks: it sets itself up", f_ot_open: "Open the settings in OwnTracks on this phone",
    f_ot_settings: "Or, in the OwnTracks app, Settings → Connection:", f_ot_mode: "Mode", f_ot_monitoring: "Monitoring", copy: "Copy",
    f_home: "Home", f_position: "Current position", f_no_position: "No position yet", f_pause: "Pause monitoring (\"he is with me\")", f_pause_reason: "Reason",
    f_pause_go: "Pause", f_resume: "Resume monitoring", f_paused_until: "Paused until", f_missing: "Report missing", f_missing_note: "What she wore, where last seen",
    f_missing_sent: "Reported: volunteers are being alerted", f_notices: "Notices (low battery, offline)", f_no_notices: "No notices",
    trigger_zone_exit: "Left the safe zone", trigger_danger_enter: "Entered a danger zone", trigger_sos: "SOS", trigger_fall: "Fall",
    trigger_removed: "Bracelet taken off", trigger_device_offline: "Bracelet offline", trigger_missing: "Reported missing",
    f_incident_open: "Incident in progress", f_incident_last: "Last incident",
  });
  // The family's privacy card (privacy.js): her access log, export and erasure.
  Object.assign(I18N["zh-CN"], {
    al_title: "谁查看过她的信息", al_hint: "每次查看位置、轨迹、资料、照片、搜索范围或协查单，以及每次修改，都会记录在此（保存 3 年，不含坐标）。",
    al_empty: "暂无记录", al_you: "您", al_role_guardian: "家属", al_role_dispatcher: "调度员", al_role_admin: "管理员", al_role_volunteer: "志愿者",
    al_record_read: "查看资料", al_photo_read: "查看照片", al_position_read: "查看位置", al_track_read: "查看轨迹", al_events_read: "查看手环事件",
    al_zones_read: "查看安全区域", al_incident_read: "查看走失事件", al_search_area_read: "查看搜索范围", al_handoff_read: "查看协查单",
    al_record_create: "登记老人", al_record_change: "修改资料", al_photo_change: "更换照片", al_zone_create: "新增区域", al_zone_delete: "删除区域",
    al_pause_set: "暂停监护", al_pause_end: "恢复监护", al_pair_set: "设置结对志愿者", al_device_bind: "绑定手环", al_device_unbind: "解绑手环",
    al_export: "导出她的全部数据", al_exported: "已导出（JSON 文件）", al_erase: "删除她的全部数据", al_erased: "她的数据已删除",
    al_erase_type: "此操作无法撤销：将删除{name}的资料、照片、位置、轨迹、事件与短信内容。请输入她的姓名“{name}”以确认。",
    al_erase_yes: "永久删除", al_erase_kept: "已取消，数据保留", al_export_action: "导出数据", al_erased_action: "已删除",
  });
  Object.assign(I18N.en, {
    al_title: "Who looked at her data", al_hint: "Every read of her position, track, record, photo, search area or hand-off page, and every change, is listed here (kept 3 years, never coordinates).",
    al_empty: "Nothing yet", al_you: "You", al_role_guardian: "Family", al_role_dispatcher: "Dispatcher", al_role_admin: "Administrator", al_role_volunteer: "Volunteer",
    al_record_read: "read her record", al_photo_read: "viewed her photo", al_position_read: "viewed her position", al_track_read: "viewed her track", al_events_read: "read bracelet events",
    al_zones_read: "read her zones", al_incident_read: "read an incident", al_search_area_read: "viewed the search area", al_handoff_read: "opened the hand-off page",
    al_record_create: "registered her", al_record_change: "changed her record", al_photo_change: "changed her photo", al_zone_create: "added a zone", al_zone_delete: "deleted a zone",
    al_pause_set: "paused monitoring", al_pause_end: "resumed monitoring", al_pair_set: "set paired volunteers", al_device_bind: "paired a bracelet", al_device_unbind: "unpaired a bracelet",
    al_export: "Export all her data", al_exported: "Exported (a JSON file)", al_erase: "Delete all her data", al_erased: "Her data was deleted",
    al_erase_type: "This cannot be undone: {name}'s record, photo, positions, tracks, incidents and message texts are erased. Type her name \"{name}\" to confirm.",
    al_erase_yes: "Delete for ever", al_erase_kept: "Cancelled: her data is kept", al_export_action: "exported her data", al_erased_action: "erased her data",
  });
  // The console's incident detail: timeline entries, who did what and how, what each
  // notification was and what became of it (the server records ids and English codes).
  Object.assign(I18N["zh-CN"], {
    volunteer: "志愿者", role_system: "系统", role_admin: "管理员", list_sep: "、", sep: "，",
    ch_api: "网页/App", ch_link: "短信链接", ch_location: "位置共享", ch_timer: "计时器", ch_geofence: "电子围栏",
    ch_device: "手环", ch_system: "系统", ch_console: "调度台", ch_push: "推送",
    tl_opened: "事件开启", tl_notified: "已通知", tl_alarm: "再次报警", tl_step: "升级", tl_no_more_volunteers: "没有更多可通知的志愿者",
    tl_dispatcher_paged: "调度员追加呼叫", tl_accepted: "接单", tl_declined: "拒绝", tl_withdrawn: "撤回", tl_arrived: "到场",
    tl_found: "已找到", tl_resolved: "事件结束", tl_cancelled: "事件取消", tl_returned_home: "已回到家中安全区", tl_note: "备注",
    tl_no_answer: "未接听电话", tl_nobody: "无人", tl_within: "{m} 米范围内", tl_more: "追加 {n} 位附近志愿者", tl_team: "呼叫救援队",
    step_t0: "首轮", step_nearby: "追加附近志愿者", step_voice: "语音呼叫", step_respond: "响应时限到", step_onsite: "到场时限到",
    step_team_called: "呼叫救援队", how_pressed: "按下“我已到达”", how_location: "按位置自动判断",
    note_left_again: "老人再次离开，已开启新事件", note_guardian_safe: "{who}短信回复平安",
    tpl_alert: "求助通知", tpl_voice_call: "语音呼叫提示", tpl_team_call: "救援队出动", tpl_dispatcher_call: "调度提醒",
    tpl_wide_call: "扩大范围求助", tpl_lead_call: "队长呼叫", tpl_covered: "已有人接单", tpl_resolved: "结束通知",
    tpl_cancelled: "取消通知", tpl_returned_home: "已回家通知", tpl_family_alert: "家属告知", tpl_accepted: "接单告知",
    tpl_on_site: "到场告知", tpl_low_battery: "低电量提醒", tpl_offline_home: "手环离线提醒", tpl_removed_home: "手环摘下提醒",
    tpl_back_online: "恢复在线",
    e_logged: "已记入通知日志", e_mqtt_sent: "已推送到志愿者 App", e_push_sent: "已推送到 {n} 个浏览器", e_sms_accepted: "短信平台已接收",
    e_call_placed: "电话已拨出", e_volunteers_only: "只能发给志愿者", e_no_subscription: "未开启浏览器推送",
    e_subscription_gone: "浏览器推送订阅已失效", e_no_phone: "没有手机号码", e_voice_unconfigured: "语音电话未配置（缺少公网地址）",
    e_invalid_number: "号码无效", e_unsubscribed: "对方已退订短信", e_not_mobile: "不是手机号码", e_unreachable_handset: "手机无法接通",
    e_unknown_number: "号码不存在", e_landline: "固话或无法接收短信", e_filtered: "被运营商拦截", e_provider: "短信/电话平台错误 {code}",
    e_provider_down: "无法连接短信平台", e_interrupted: "发送中断，结果未知，未重发", e_incident_resolved: "事件已结束，无需发送",
    e_incident_cancelled: "事件已取消，无需发送", e_volunteer_already: "志愿者{state}", e_not_configured: "渠道未配置：{ch}",
  });
  Object.assign(I18N.en, {
    volunteer: "Volunteer", role_system: "System", role_admin: "Admin", list_sep: ", ", sep: ", ",
    ch_api: "web/app", ch_link: "SMS link", ch_location: "shared location", ch_timer: "timer", ch_geofence: "geofence",
    ch_device: "bracelet", ch_system: "system", ch_console: "console", ch_push: "push",
    tl_opened: "Opened", tl_notified: "Notified", tl_alarm: "Another alarm", tl_step: "Escalation", tl_no_more_volunteers: "No more volunteers to notify",
    tl_dispatcher_paged: "Dispatcher paged more", tl_accepted: "Accepted", tl_declined: "Declined", tl_withdrawn: "Withdrew", tl_arrived: "Arrived",
    tl_found: "Found", tl_resolved: "Resolved", tl_cancelled: "Cancelled", tl_returned_home: "Back inside the home zone", tl_note: "Note",
    tl_no_answer: "Did not answer the call", tl_nobody: "nobody", tl_within: "within {m} m", tl_more: "{n} more nearby", tl_team: "the rescue team",
    step_t0: "first round", step_nearby: "more nearby", step_voice: "voice calls", step_respond: "respond deadline", step_onsite: "on-site deadline",
    step_team_called: "team called", how_pressed: "pressed \"I'm here\"", how_location: "by shared location",
    note_left_again: "She left again: a new incident follows", note_guardian_safe: "{who} replied \"safe\" by SMS",
    tpl_alert: "alert", tpl_voice_call: "voice call notice", tpl_team_call: "team call-out", tpl_dispatcher_call: "dispatcher alert",
    tpl_wide_call: "wider call", tpl_lead_call: "team lead call", tpl_covered: "covered, stand by", tpl_resolved: "closed",
    tpl_cancelled: "cancelled", tpl_returned_home: "back home", tpl_family_alert: "family alert", tpl_accepted: "accepted notice",
    tpl_on_site: "on-site notice", tpl_low_battery: "low battery", tpl_offline_home: "bracelet offline", tpl_removed_home: "bracelet taken off",
    tpl_back_online: "back online",
    e_logged: "recorded in the log", e_mqtt_sent: "pushed to the volunteer app", e_push_sent: "pushed to {n} browser(s)", e_sms_accepted: "accepted by the SMS provider",
    e_call_placed: "call placed", e_volunteers_only: "reaches volunteers only", e_no_subscription: "no browser push subscription",
    e_subscription_gone: "browser push subscription expired", e_no_phone: "no phone number", e_voice_unconfigured: "voice calls not set up (no public URL)",
    e_invalid_number: "invalid number", e_unsubscribed: "unsubscribed (STOP)", e_not_mobile: "not a mobile number", e_unreachable_handset: "handset unreachable",
    e_unknown_number: "unknown number", e_landline: "landline or cannot receive SMS", e_filtered: "filtered by the carrier", e_provider: "SMS/voice provider error {code}",
    e_provider_down: "SMS provider unreachable", e_interrupted: "interrupted while sending: fate unknown, not resent", e_incident_resolved: "incident already resolved",
    e_incident_cancelled: "incident cancelled", e_volunteer_already: "volunteer already {state}", e_not_configured: "channel not set up: {ch}",
  });
  // The Point Last Seen: where and when the search starts, and who said so (issue 20).
  Object.assign(I18N["zh-CN"], {
    ls_line: "最后看到：{ago}前（{time}），在 {place}（{source}）", ls_hm: "{h} 小时 {mm} 分", ls_m: "{m} 分钟",
    ls_bracelet_fix: "手环定位", ls_family: "家属所述", ls_report: "按报告时间", ls_sighting: "目击",
    sighting: "目击更正", sighting_time: "看到的时间", sighting_note: "谁在哪里看到（可选）", sighting_pick: "在地图上点选地点",
    sighting_save: "更正最后位置", sighting_saved: "已更正最后位置", sighting_repaged: "已通知附近志愿者", sighting_no_page: "未再次通知（{why}）",
    tl_sighting: "目击", why_near_last_page: "距上次通知位置不足 500 米", why_paged_recently: "10 分钟内已通知过", why_newer_fix: "手环有更新的定位",
  });
  Object.assign(I18N.en, {
    ls_line: "last seen {ago} ago ({time}) at {place} ({source})", ls_hm: "{h} h {mm} min", ls_m: "{m} min",
    ls_bracelet_fix: "bracelet fix", ls_family: "family's word", ls_report: "time of the report", ls_sighting: "sighting",
    sighting: "Correct where she was seen", sighting_time: "Seen at", sighting_note: "Who saw her where (optional)", sighting_pick: "Click the map to pick the place",
    sighting_save: "Set point last seen", sighting_saved: "Point last seen corrected", sighting_repaged: "nearby volunteers paged", sighting_no_page: "nobody paged again ({why})",
    tl_sighting: "sighting", why_near_last_page: "within 500 m of the last page", why_paged_recently: "paged in the last 10 min", why_newer_fix: "the bracelet has a newer fix",
  });
  // Drills (演练): the board's mark and the console's "start drill".
  Object.assign(I18N["zh-CN"], {
    drill: "演练", start_drill: "开始演练", drill_unannounced: "不预先告知家属（仅调度知道）",
    drill_start_at: "开始时间（留空＝现在）", drill_scheduled: "演练已排期：", drill_started: "演练已开始",
  });
  Object.assign(I18N.en, {
    drill: "DRILL", start_drill: "Start drill", drill_unannounced: "Unannounced (only dispatch knows)",
    drill_start_at: "Start at (empty = now)", drill_scheduled: "Drill scheduled: ", drill_started: "Drill started",
  });
  // A TCP bracelet's connection through the gateway (console detail, family device card).
  Object.assign(I18N["zh-CN"], {
    proto_native: "原生", proto_owntracks: "OwnTracks", proto_gt06: "GT06", proto_jt808: "JT/T 808", proto_watch: "3G 手表", proto_h02: "H02",
    gw_connected: "已连接", gw_disconnected: "未连接", gw_last_connection: "最近连接", gw_never: "从未连接",
    gw_last_command: "最近指令", gw_answer: "回复", gw_no_answer: "尚无回复", gw_no_command: "尚未发送指令",
  });
  Object.assign(I18N.en, {
    proto_native: "native", proto_owntracks: "OwnTracks", proto_gt06: "GT06", proto_jt808: "JT/T 808", proto_watch: "3G watch", proto_h02: "H02",
    gw_connected: "connected", gw_disconnected: "not connected", gw_last_connection: "last connection", gw_never: "never connected",
    gw_last_command: "last command", gw_answer: "answer", gw_no_answer: "no answer yet", gw_no_command: "no command sent yet",
  });
  let locale = localStorage.getItem("hw.locale") || document.documentElement.dataset.locale || "zh-CN";
  const t = (key) => (I18N[locale] && I18N[locale][key]) || I18N["zh-CN"][key] || key;
  const has = (key) => Boolean((I18N[locale] && I18N[locale][key]) || I18N["zh-CN"][key]);
  // A code from the server in words: its translation, else readable ("no_more" → "no more").
  const label = (prefix, value) => (value == null || value === "" ? "" : has(prefix + value) ? t(prefix + value) : String(value).replace(/_/g, " "));
  // A translation with {placeholders} filled in.
  const fmt = (key, values) => t(key).replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
  function setLocale(next) { locale = next; localStorage.setItem("hw.locale", next); document.documentElement.lang = next; }
  function getLocale() { return locale; }

  async function api(path, { method = "GET", body, raw = false } = {}) {
    const headers = { "X-Homeward": "1" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (res.status === 401 && !path.endsWith("/session")) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("unauthorized");
    }
    if (raw) return res;
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) { const err = new Error(JSON.stringify(data && data.detail)); err.status = res.status; err.data = data; throw err; }
    return data;
  }

  // Server-sent events with a short-lived ticket; EventSource resumes with Last-Event-ID
  // by itself, and a fresh ticket is fetched when the old one has expired.
  function stream(onEvent, onState) {
    let source = null, lastId = null, closed = false;
    async function open() {
      if (closed) return;
      try {
        const ticket = await api("/api/v1/stream/ticket", { method: "POST" });
        const url = ticket.url + (lastId ? "&since=" + encodeURIComponent(lastId) : "");
        source = new EventSource(url);
        source.onopen = () => onState && onState("live");
        const handle = (e) => { lastId = e.lastEventId || lastId; onEvent(e.type, JSON.parse(e.data)); };
        ["incident", "notice", "system", "notification"].forEach((type) => source.addEventListener(type, handle));
        source.onerror = () => { onState && onState("reconnecting"); source.close(); setTimeout(open, 2000); };
      } catch (e) { onState && onState("reconnecting"); setTimeout(open, 3000); }
    }
    open();
    return { close() { closed = true; if (source) source.close(); } };
  }

  // WGS-84 -> GCJ-02 (AMap tiles are drawn in GCJ-02; we store and send WGS-84).
  function outOfChina(lat, lon) { return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271; }
  function tLat(x, y) { let r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(y * Math.PI) + 40 * Math.sin(y / 3 * Math.PI)) * 2 / 3;
    r += (160 * Math.sin(y / 12 * Math.PI) + 320 * Math.sin(y * Math.PI / 30)) * 2 / 3; return r; }
  function tLon(x, y) { let r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(x * Math.PI) + 40 * Math.sin(x / 3 * Math.PI)) * 2 / 3;
    r += (150 * Math.sin(x / 12 * Math.PI) + 300 * Math.sin(x / 30 * Math.PI)) * 2 / 3; return r; }
  function wgsToGcj(lat, lon) {
    if (outOfChina(lat, lon)) return [lat, lon];
    const a = 6378245.0, ee = 0.00669342162296594323;
    let dLat = tLat(lon - 105, lat - 35), dLon = tLon(lon - 105, lat - 35);
    const radLat = lat / 180 * Math.PI; let magic = Math.sin(radLat); magic = 1 - ee * magic * magic;
    const sq = Math.sqrt(magic);
    dLat = (dLat * 180) / ((a * (1 - ee)) / (magic * sq) * Math.PI);
    dLon = (dLon * 180) / (a / sq * Math.cos(radLat) * Math.PI);
    return [lat + dLat, lon + dLon];
  }
  function gcjToWgs(lat, lon) { const [gl, go] = wgsToGcj(lat, lon); return [lat * 2 - gl, lon * 2 - go]; }

  let config = { map_tiles: "osm", locale: "zh-CN" };
  // The server's clock, not the device's: phones are often minutes (or days) off, and every
  // countdown, pause end and "today" must agree with the deadlines the server keeps.
  let skewMs = 0;
  function now() { return Date.now() + skewMs; }
  async function loadConfig() {
    try {
      const asked = Date.now();
      config = await api("/api/v1/config");
      if (typeof config.server_time_ms === "number") skewMs = config.server_time_ms - (asked + Date.now()) / 2;
    } catch (e) { /* defaults */ }
    return config;
  }

  // A Leaflet map whose layers take WGS-84: shifted to GCJ-02 when the tiles are AMap's.
  function map(element, center) {
    const amap = config.map_tiles === "amap";
    const m = L.map(element, { zoomControl: true, attributionControl: true })
      .setView(amap ? wgsToGcj(center[0], center[1]) : center, 15);
    const url = amap ? "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}"
      : config.map_tiles === "osm" ? "https://tile.openstreetmap.org/{z}/{x}/{y}.png" : config.map_tiles;
    const tiles = L.tileLayer(url, { maxZoom: 19, subdomains: amap ? "1234" : "abc",
      attribution: amap ? "© AMap" : "© OpenStreetMap" });
    let failed = 0;
    tiles.on("tileerror", () => { failed += 1; if (failed === 3) element.classList.add("no-tiles"); });
    tiles.addTo(m);
    const shift = amap ? (lat, lon) => wgsToGcj(lat, lon) : (lat, lon) => [lat, lon];
    const unshift = amap ? (lat, lon) => gcjToWgs(lat, lon) : (lat, lon) => [lat, lon];
    return { map: m, ll: (lat, lon) => shift(lat, lon), wgs: (lat, lon) => unshift(lat, lon), crs: amap ? "gcj02" : "wgs84" };
  }

  // GeoJSON [lon, lat] rings -> Leaflet [lat, lon] (shifted for the tiles).
  function ring(coords, ll) { return coords.map(([lon, lat]) => ll(lat, lon)); }

  // Elements whose text is text, never parsed as HTML: every name, note or address a user
  // typed goes through here (or textContent), never through innerHTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v; else if (k === "data") Object.assign(node.dataset, v);
      else if (k === "selected" || k === "checked" || k === "value") node[k] = v; else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null && c !== "") node.append(c instanceof Node ? c : String(c));
    return node;
  }
  // Leaflet puts a string tooltip in with innerHTML: hand it a node holding plain text.
  function tip(text) { return el("span", {}, text == null ? "" : String(text)); }

  function clock(seconds) { const s = Math.max(0, Math.floor(Math.abs(seconds))); return (seconds < 0 ? "-" : "") + Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"); }
  function dayTime(iso) { return new Date(iso).toLocaleString(locale, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }); }
  // The bracelet's own words, without the gateway's kind prefix ("command_reply TIMER OK!").
  function answerText(answer) { return answer.replace(/^(command_reply|terminal_response)\s*/, "") || "OK"; }
  // One line of plain text (set it with textContent): protocol, connection, last command → answer.
  function gatewayLine(d) {
    const parts = [t("proto_" + d.protocol)];
    const g = d.gateway;
    if (g) {
      parts.push(g.connected ? t("gw_connected") : t("gw_disconnected"));
      parts.push(g.connected_at ? `${t("gw_last_connection")} ${dayTime(g.connected_at)}` : t("gw_never"));
      parts.push(g.last_command
        ? `${t("gw_last_command")} ${g.last_command} → ${g.last_answer ? `${t("gw_answer")} ${answerText(g.last_answer)}` : t("gw_no_answer")}`
        : t("gw_no_command"));
    }
    return parts.join(" · ");
  }
  function hhmm(iso) { return iso ? new Date(iso).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—"; }

  // "last seen 2 h 05 min ago (14:10) at 30.51234, 120.68530 (sighting)" from a search
  // area's origin; the elapsed time is the server's, so a phone's wrong clock does not lie.
  function lastSeen(area) {
    const props = (area && area.properties) || {};
    const o = props.origin;
    if (!o || !o.at) return "";
    const minutes = Math.max(0, Math.floor((props.elapsed_s || 0) / 60));
    const ago = minutes >= 60 ? fmt("ls_hm", { h: Math.floor(minutes / 60), mm: String(minutes % 60).padStart(2, "0") }) : fmt("ls_m", { m: minutes });
    const time = new Date(o.time).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
    return fmt("ls_line", { ago, time, place: `${Number(o.at.lat).toFixed(5)}, ${Number(o.at.lon).toFixed(5)}`, source: label("ls_", o.source) });
  }

  function applyI18n(root = document) {
    root.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
    root.querySelectorAll("[data-t-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.tPlaceholder); });
  }

  async function whoami() { return api("/api/v1/session"); }
  async function logout() { await api("/api/v1/session", { method: "DELETE" }); location.href = "/login"; }

  return { t, label, fmt, setLocale, getLocale, api, stream, map, ring, wgsToGcj, gcjToWgs, loadConfig, now, el, tip, clock, hhmm, lastSeen, gatewayLine, applyI18n, whoami, logout, get config() { return config; } };
})();
