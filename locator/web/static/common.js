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
    },
  };
  let locale = localStorage.getItem("hw.locale") || document.documentElement.dataset.locale || "zh-CN";
  const t = (key) => (I18N[locale] && I18N[locale][key]) || I18N["zh-CN"][key] || key;
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
  async function loadConfig() { try { config = await api("/api/v1/config"); } catch (e) { /* defaults */ } return config; }

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

  function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
  function clock(seconds) { const s = Math.max(0, Math.floor(Math.abs(seconds))); return (seconds < 0 ? "-" : "") + Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"); }
  function hhmm(iso) { return iso ? new Date(iso).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—"; }

  function applyI18n(root = document) {
    root.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
    root.querySelectorAll("[data-t-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.tPlaceholder); });
  }

  async function whoami() { return api("/api/v1/session"); }
  async function logout() { await api("/api/v1/session", { method: "DELETE" }); location.href = "/login"; }

  return { t, setLocale, getLocale, api, stream, map, ring, wgsToGcj, gcjToWgs, loadConfig, esc, clock, hhmm, applyI18n, whoami, logout, get config() { return config; } };
})();
