// The dispatcher console: live map, incident board with SLA countdowns, actions.
"use strict";

(async () => {
  const t = HW.t;
  const config = await HW.loadConfig();
  if (!localStorage.getItem("hw.locale")) HW.setLocale(config.locale || "zh-CN");
  HW.applyI18n();
  document.getElementById("map").dataset.noTiles = t("map_no_tiles");
  document.getElementById("lang").onclick = () => {
    HW.setLocale(HW.getLocale() === "en" ? "zh-CN" : "en");
    HW.applyI18n(); document.getElementById("map").dataset.noTiles = t("map_no_tiles"); render(); drawDetail(); drawLog();
  };
  document.getElementById("logout").onclick = HW.logout;
  const me = await HW.whoami();
  if (me.role !== "admin" && me.role !== "dispatcher") { document.body.replaceChildren(HW.el("h1", {}, t("forbidden"))); return; }

  // Dispatcher choices survive the refreshes (every feed event redraws the detail panel).
  const state = { incidents: [], overview: { elders: [], volunteers: [] }, selected: null, detail: null, notifications: [],
    log: [], outcome: {}, replay: null, area: null, sighting: {} };
  const overview = await HW.api("/api/v1/overview");
  state.overview = overview;
  const first = overview.elders.find((e) => e.home) || { home: { lat: 30.5112, lon: 120.6853 } };
  const M = HW.map(document.getElementById("map"), [first.home.lat, first.home.lon]);
  const layers = { zones: L.layerGroup().addTo(M.map), elders: L.layerGroup().addTo(M.map),
    volunteers: L.layerGroup().addTo(M.map), area: L.layerGroup().addTo(M.map), track: L.layerGroup().addTo(M.map) };

  function drawOverview() {
    learn(state.overview.volunteers, "id");
    layers.zones.clearLayers(); layers.elders.clearLayers(); layers.volunteers.clearLayers();
    for (const elder of state.overview.elders) {
      for (const zone of elder.zones) {
        const kind = zone.properties.kind;
        const style = { color: kind === "danger" ? "#b3261e" : "#0a7d32", weight: 2, fillOpacity: 0.08, className: `zone zone-${kind}` };
        const g = zone.geometry;
        if (g.type === "Point") L.circle(M.ll(g.coordinates[1], g.coordinates[0]), { ...style, radius: zone.properties.radius_m }).addTo(layers.zones);
        else if (g.type === "Polygon") L.polygon(HW.ring(g.coordinates[0], M.ll), style).addTo(layers.zones);
        else if (g.type === "MultiPolygon") g.coordinates.forEach((p) => L.polygon(HW.ring(p[0], M.ll), style).addTo(layers.zones));
      }
      if (elder.position) {
        const p = elder.position;
        const marker = L.circleMarker(M.ll(p.lat, p.lon), {
          radius: 8, weight: 2, color: elder.incident_id ? "#b3261e" : (p.stale ? "#777" : "#12355b"),
          fillOpacity: p.stale ? 0.1 : 0.8, className: `elder ${p.stale ? "stale" : "fresh"}`,
        }).bindTooltip(HW.tip(`${elder.name} · ${p.stale ? t("stale") : t("fresh")}`));
        marker.on("click", () => { if (elder.incident_id) select(elder.incident_id); });
        marker.addTo(layers.elders);
      }
    }
    for (const v of state.overview.volunteers) {
      L.circleMarker(M.ll(v.lat, v.lon), { radius: 5, color: v.on_duty ? "#d97706" : "#999", fillOpacity: 0.9, className: "volunteer" })
        .bindTooltip(HW.tip(v.name)).addTo(layers.volunteers);
    }
  }

  // Most urgent first: breached, then the deadline that comes soonest.
  function urgency(incident, now) {
    const deadline = incident.status === "open" ? Date.parse(incident.respond_deadline) : Date.parse(incident.onsite_deadline);
    return incident.status === "on_site" ? Infinity : deadline - now;
  }

  function countdown(el, deadlineIso, doneIso) {
    el.classList.remove("ok", "amber", "red");
    const t0 = Date.parse(el.dataset.t0);
    if (doneIso) {
      const took = (Date.parse(doneIso) - t0) / 1000;
      el.textContent = "✓ " + HW.clock(took);
      el.classList.add(took <= (Date.parse(deadlineIso) - t0) / 1000 ? "ok" : "red");
      return;
    }
    const left = (Date.parse(deadlineIso) - HW.now()) / 1000;
    el.textContent = left >= 0 ? HW.clock(left) : `${t("breached")} +${HW.clock(-left)}`;
    el.classList.add(left <= 0 ? "red" : left <= 60 ? "amber" : "ok");
  }

  function render() {
    const board = document.getElementById("board");
    const now = HW.now();
    const sorted = [...state.incidents].sort((a, b) => urgency(a, now) - urgency(b, now));
    board.replaceChildren();
    document.getElementById("empty").classList.toggle("hidden", sorted.length > 0);
    const tpl = document.getElementById("incident-card");
    for (const incident of sorted) {
      const card = tpl.content.firstElementChild.cloneNode(true);
      HW.applyI18n(card);
      card.dataset.incidentId = incident.id;
      card.dataset.status = incident.status;
      card.querySelector(".name").textContent = incident.elder_name || `#${incident.elder_id}`;
      const pill = card.querySelector(".status");
      pill.textContent = t("status_" + incident.status); pill.classList.add(incident.status);
      card.querySelector(".code").textContent = "#" + incident.code;
      if (incident.drill) { card.classList.add("drill"); card.querySelector(".pill.drill").classList.remove("hidden"); }
      card.querySelector(".trigger").textContent = `${t("trigger_" + incident.trigger)} · t0 ${HW.hhmm(incident.t0)}` +
        (incident.suggested_outcome ? ` · ${t("suggested")}: ${t(incident.suggested_outcome)}` : "");
      for (const [cls, deadline, done] of [["respond", incident.respond_deadline, incident.acknowledged_at], ["onsite", incident.onsite_deadline, incident.on_site_at]]) {
        const el = card.querySelector(".countdown." + cls);
        el.dataset.t0 = incident.t0; el.dataset.deadline = deadline; el.dataset.done = done || "";
        countdown(el, deadline, done);
      }
      if (state.selected === incident.id) card.classList.add("selected");
      card.onclick = () => select(incident.id);
      board.appendChild(card);
    }
  }

  setInterval(() => {
    document.querySelectorAll(".countdown").forEach((el) => countdown(el, el.dataset.deadline, el.dataset.done || null));
  }, 1000);

  async function loadIncidents() {
    const page = await HW.api("/api/v1/incidents?status=open&limit=200");
    state.incidents = page.items;
    for (const incident of page.items) learn(incident.responders, "volunteer_id");
    if (state.selected && !state.incidents.find((i) => i.id === state.selected)) {
      // Closed meanwhile: keep showing it in the detail panel, read directly.
      try { state.detail = await HW.api(`/api/v1/incidents/${state.selected}`); } catch (e) { state.detail = null; }
    }
    render();
    if (!state.selected && state.incidents.length) {
      const now = HW.now();
      const urgent = [...state.incidents].sort((a, b) => urgency(a, now) - urgency(b, now))[0];
      select(urgent.id);
    }
  }

  async function select(id) {
    if (state.selected !== id) { state.replay = null; layers.track.clearLayers(); state.area = null; state.sighting = {}; }
    state.selected = id;
    render();
    await loadDetail();
  }

  async function loadDetail() {
    const id = state.selected;
    if (!id) return;
    const [incident, notes] = await Promise.all([
      HW.api(`/api/v1/incidents/${id}`),
      HW.api(`/api/v1/notifications?incident_id=${id}&limit=500`),
    ]);
    state.detail = incident; state.notifications = notes.items;
    drawDetail();
    drawArea(id);
    drawDevice(incident.elder_id);
  }

  // The bracelet she wears: protocol, connection and the last command's answer (text only).
  async function drawDevice(elderId) {
    state.deviceOf = state.deviceOf || {};  // her record is read once, not at every refresh
    try {
      if (!(elderId in state.deviceOf)) state.deviceOf[elderId] = (await HW.api(`/api/v1/elders/${elderId}`)).device_id || null;
      const id = state.deviceOf[elderId];
      const d = id ? await HW.api(`/api/v1/devices/${encodeURIComponent(id)}`) : null;
      const line = document.getElementById("detail-device");
      state.deviceText = { [elderId]: `${t("f_device")}: ` + (d ? `${d.device_id} · ${HW.gatewayLine(d)}` : t("f_no_device")) };
      if (line) line.textContent = state.deviceText[elderId];
    } catch (e) { /* the incident detail stands without it */ }
  }

  async function drawArea(id) {
    layers.area.clearLayers();
    try {
      const area = await HW.api(`/api/v1/incidents/${id}/search-area`);
      state.area = area;
      const line = document.getElementById("last-seen");
      if (line) line.textContent = HW.lastSeen(area);
      for (const f of area.features) {
        if (f.geometry.type === "Polygon") {
          const p = f.properties.probability || 0;
          L.polygon(HW.ring(f.geometry.coordinates[0], M.ll), { color: "#c2410c", weight: 1, fillOpacity: 0.06 + 0.1 * (1 - p), className: "search-ring" })
            .bindTooltip(HW.tip(`${Math.round(p * 100)}% · ${Math.round(f.properties.radius_m)} m`)).addTo(layers.area);
        } else {
          const [lon, lat] = f.geometry.coordinates;
          L.circleMarker(M.ll(lat, lon), { radius: 7, color: "#c2410c", className: "last-seen" }).addTo(layers.area);
        }
      }
      const polys = area.features.filter((f) => f.geometry.type === "Polygon");
      if (polys.length) M.map.fitBounds(L.polygon(HW.ring(polys[polys.length - 1].geometry.coordinates[0], M.ll)).getBounds(), { maxZoom: 16 });
    } catch (e) { /* no position known yet */ }
  }

  async function replay(elderId) {
    layers.track.clearLayers();
    const since = new Date(HW.now() - 3 * 3600 * 1000).toISOString();
    const track = await HW.api(`/api/v1/elders/${elderId}/track?since=${encodeURIComponent(since)}`);
    const points = track.features.map((f) => M.ll(f.geometry.coordinates[1], f.geometry.coordinates[0]));
    if (!points.length) return;
    const line = L.polyline([], { color: "#1565c0", weight: 3, className: "track" }).addTo(layers.track);
    state.replay = { elderId, points, line, value: points.length };
    bindReplay();
  }

  function bindReplay() {
    const r = state.replay;
    const slider = document.getElementById("replay-slider");
    if (!r || !slider || !state.detail || state.detail.elder_id !== r.elderId) return;
    slider.max = r.points.length; slider.value = r.value;
    const show = () => { r.value = Number(slider.value); r.line.setLatLngs(r.points.slice(0, r.value)); };
    slider.oninput = show; show();
  }

  // --- people and codes in words ---------------------------------------------------------
  // The server's records name people by id ("volunteer:66", "guardian:0", "dispatcher:1"):
  // names come from the overview, the incidents' responders and, for anyone else, one
  // lookup each (then the panels redraw).
  const names = { volunteers: new Map(), dispatchers: new Map(), guardians: new Map() };
  const asked = new Set(), wanted = new Map();
  let lookingUp = null;
  function learn(people, idKey) {
    for (const p of people || []) if (p && p.name && p[idKey] != null) names.volunteers.set(String(p[idKey]), p.name);
  }
  function want(path, use) {
    if (asked.has(path)) return;
    asked.add(path); wanted.set(path, use);
    if (!lookingUp) lookingUp = setTimeout(lookUp, 0);
  }
  async function lookUp() {
    lookingUp = null;
    const batch = [...wanted]; wanted.clear();
    const got = await Promise.allSettled(batch.map(([path]) => HW.api(path)));
    let learnt = false;
    got.forEach((r, i) => { if (r.status === "fulfilled" && r.value) { batch[i][1](r.value); learnt = true; } });
    if (learnt) { drawDetail(); drawLog(); }
  }
  function volunteerName(id) {
    const key = String(id);
    if (names.volunteers.has(key)) return names.volunteers.get(key);
    if (/^\d+$/.test(key)) want(`/api/v1/volunteers/${key}`, (v) => names.volunteers.set(key, v.name));
    return `${t("volunteer")} #${key}`;
  }
  function guardiansOf(elderId) {
    if (elderId == null) return [];
    if (!names.guardians.has(elderId)) want(`/api/v1/elders/${Number(elderId)}`, (e) => names.guardians.set(elderId, e.guardians || []));
    return names.guardians.get(elderId) || [];
  }
  // A guardian by index (a recipient) or by phone (an SMS answer); else the role alone.
  function guardianName(elderId, ident) {
    if (!ident) return t("guardian");
    const list = guardiansOf(elderId);
    const g = /^\d+$/.test(ident) ? list[Number(ident)] : list.find((x) => x.phone === ident);
    if (g && g.name) return `${t("guardian")} ${g.name}`;
    return /^\d+$/.test(ident) ? `${t("guardian")} ${Number(ident) + 1}` : t("guardian");
  }
  function dispatcherName(ident) {
    if (!/^\d+$/.test(ident)) return t("dispatcher");
    want("/api/v1/dispatchers?limit=200", (page) => page.items.forEach((x) => names.dispatchers.set(String(x.id), x.name)));
    const name = names.dispatchers.get(ident);
    return name ? `${t("dispatcher")} ${name}` : t("dispatcher");
  }
  // Who someone is: "volunteer:66" → her name, "guardian:0" → "家属 王芳", "system" → "系统".
  // A recipient's id is a roster entry; an actor's is a login's subject (a volunteer's id,
  // a guardian's phone when she answered by SMS, else nothing to name her by).
  function who(someone, elderId, { actor = false } = {}) {
    const text = String(someone || "");
    const at = text.indexOf(":");
    const kind = at < 0 ? text : text.slice(0, at), ident = at < 0 ? "" : text.slice(at + 1);
    if (kind === "volunteer") return /^\d+$/.test(ident) ? volunteerName(ident) : t("volunteer");
    if (kind === "guardian") return actor && /^\d+$/.test(ident) ? t("guardian") : guardianName(elderId, ident);
    if (kind === "dispatcher") return actor ? t("dispatcher") : dispatcherName(ident);
    return HW.label("role_", kind);
  }

  // What became of a notification, in words; an unknown detail stays as the provider said it.
  const TWILIO = { 21211: "e_invalid_number", 21610: "e_unsubscribed", 21614: "e_not_mobile", 30003: "e_unreachable_handset",
    30005: "e_unknown_number", 30006: "e_landline", 30007: "e_filtered" };
  const ERRORS = [
    [/^recorded in the notifications log$/, () => t("e_logged")],
    [/^published to the volunteer's MQTT topic$/, () => t("e_mqtt_sent")],
    [/^pushed to (\d+) browser/, (m) => HW.fmt("e_push_sent", { n: m[1] })],
    [/^accepted by Twilio$/, () => t("e_sms_accepted")],
    [/^call placed by Twilio$/, () => t("e_call_placed")],
    [/reaches volunteers only$/, () => t("e_volunteers_only")],
    [/^no browser subscription$/, () => t("e_no_subscription")],
    [/subscription gone/, () => t("e_subscription_gone")],
    [/^no phone number$/, () => t("e_no_phone")],
    [/^voice calls need /, () => t("e_voice_unconfigured")],
    [/^twilio (\d+)/, (m) => (TWILIO[m[1]] ? t(TWILIO[m[1]]) : HW.fmt("e_provider", { code: m[1] }))],
    [/^Twilio unreachable/, () => t("e_provider_down")],
    [/^interrupted after sending began/, () => t("e_interrupted")],
    [/^incident (resolved|cancelled)$/, (m) => t("e_incident_" + m[1])],
    [/^volunteer already (\w+)$/, (m) => HW.fmt("e_volunteer_already", { state: HW.label("r_", m[1]) })],
    [/^channel (\w+) is not configured$/, (m) => HW.fmt("e_not_configured", { ch: HW.label("ch_", m[1]) })],
  ];
  function humanError(error) {
    if (!error) return "";
    for (const [pattern, say] of ERRORS) { const m = pattern.exec(error); if (m) return say(m); }
    return error;
  }

  const el = HW.el;  // elements with text set as text, never parsed as HTML
  const muted = (text) => (text ? el("span", { class: "muted" }, text) : "");

  function notificationRow(n, withIncident) {
    const detail = humanError(n.error);
    const cells = [
      ...(withIncident ? [el("td", {}, HW.hhmm(n.created_at)), el("td", {}, n.incident_id ? "#" + n.incident_id : "")] : []),
      el("td", { class: "recipient" }, who(n.recipient, n.elder_id), withIncident ? "" : " ", withIncident ? "" : muted(HW.label("tpl_", n.template || n.step))),
      el("td", { class: "channel" }, HW.label("ch_", n.channel)),
      el("td", { class: "result" }, HW.label("n_", n.status), detail ? " " : "", detail ? el("span", { class: "muted", title: n.error }, detail) : ""),
    ];
    return el("tr", { data: { status: n.status || "" } }, ...cells);
  }

  function header(...keys) { return el("tr", {}, ...keys.map((k) => el("th", {}, k === "#" ? "#" : t(k)))); }

  // One timeline entry: what happened, to whom or with what, and (muted) who did it and how.
  function timelineItem(e, d) {
    const sep = t("sep");
    const person = e.volunteer_id != null ? volunteerName(e.volunteer_id) : "";
    let named = person;  // whom the entry itself names
    const note = (text) => {
      if (!text) return "";
      if (text === "she left again: a new incident follows") return t("note_left_again");
      const safe = /^guardian (\S+) says safe \(SMS\)$/.exec(text);
      if (!safe) return text;
      named = guardianName(d.elder_id, safe[1]);
      return HW.fmt("note_guardian_safe", { who: named });
    };
    const parts = {
      opened: () => [HW.label("trigger_", e.trigger), note(e.note)],
      alarm: () => [HW.label("trigger_", e.trigger), note(e.note)],
      notified: () => [(e.volunteers || []).map(volunteerName).join(t("list_sep")) || t("tl_nobody"), HW.label("step_", e.step)],
      step: () => [HW.label("step_", e.step), e.breach ? t("breached") : ""],
      no_more_volunteers: () => [e.radius_m != null ? HW.fmt("tl_within", { m: Math.round(e.radius_m) }) : ""],
      dispatcher_paged: () => [e.more ? HW.fmt("tl_more", { n: e.more }) : "", e.team ? t("tl_team") : ""],
      sighting: () => [e.seen_at ? HW.hhmm(e.seen_at) : "", note(e.note),
        e.repaged ? t("sighting_repaged") : HW.fmt("sighting_no_page", { why: HW.label("why_", e.reason) })],
      arrived: () => [person, HW.label("how_", e.how)],
      found: () => [person, note(e.note)],
      resolved: () => [HW.label("", e.outcome), note(e.note)],
      cancelled: () => [note(e.note)],
      note: () => [note(e.text)],
    };
    const detail = (parts[e.type] ? parts[e.type]() : [person]).filter(Boolean).join(sep);
    // Who did it, unless the entry already names them; then how it reached us.
    const actor = e.actor ? who(e.actor, d.elder_id, { actor: true }) : "";
    const how = [actor === named ? "" : actor, HW.label("ch_", e.channel)].filter(Boolean).join(" · ");
    const what = HW.label("tl_", e.type || "note");
    return el("li", { data: { type: e.type || "" } },
      el("span", { class: "at" }, HW.hhmm(e.at)), " ", el("b", {}, what.charAt(0).toUpperCase() + what.slice(1)),
      detail ? " " : "", detail, how ? " " : "", muted(how));
  }

  function drawLog() {
    const box = document.getElementById("log");
    box.replaceChildren(header("time", "#", "recipient", "channel", "result"), ...state.log.map((n) => notificationRow(n, true)));
  }

  async function loadLog() {
    try { state.log = (await HW.api("/api/v1/notifications?limit=30")).items; } catch (e) { return; }
    drawLog();
  }

  function drawDetail() {
    const d = state.detail;
    const box = document.getElementById("detail");
    if (!d) { box.classList.add("hidden"); return; }
    box.classList.remove("hidden");
    const active = ["open", "acknowledged", "on_site"].includes(d.status);
    const outcomes = ["found_safe", "returned_home", "found_injured", "handed_to_police", "false_alarm", "other"];
    const chosen = state.outcome[d.id] || d.suggested_outcome || "found_safe";
    box.replaceChildren(
      el("div", { class: "row" },
        el("h3", {}, d.elder_name || `#${d.elder_id}`, " ", el("span", { class: `pill ${d.status}`, id: "detail-status" }, t("status_" + d.status)),
          d.drill ? el("span", { class: "pill drill", id: "detail-drill" }, t("drill")) : ""),
        el("a", { class: "button", id: "handoff", target: "_blank", rel: "noopener", href: `/api/v1/incidents/${Number(d.id)}/handoff` }, t("handoff"))),
      el("p", { class: "muted", id: "detail-device" }, (state.deviceText || {})[d.elder_id] || ""),
      active
        ? el("div", { class: "actions" },
          el("button", { id: "notify-more" }, t("notify_more")),
          el("button", { id: "call-team" }, t("call_team")),
          el("select", { id: "outcome" }, ...outcomes.map((o) => el("option", { value: o, selected: o === chosen }, t(o)))),
          el("button", { class: "primary", id: "resolve" }, t("resolve")),
          el("button", { class: "danger", id: "cancel" }, t("cancel")))
        : el("p", {}, `${t("outcome")}: ${t(d.outcome || "")}`),
      el("p", { id: "last-seen", class: "last-seen" }, HW.lastSeen(state.area)),
      active ? sightingForm() : "",
      el("div", { class: "actions" }, el("button", { id: "replay" }, t("replay")),
        el("input", { id: "replay-slider", type: "range", min: "1", max: "1", value: "1", "aria-label": t("replay") })),
      el("h4", {}, t("responders")), el("table", { class: "log", id: "responders" }),
      el("h4", {}, t("notifications")), el("table", { class: "log", id: "notifications" }),
      el("h4", {}, t("timeline")), el("ol", { id: "timeline" }));
    learn(d.responders, "volunteer_id");
    document.getElementById("responders").replaceChildren(...d.responders.map((r) => el("tr", { data: { volunteer: r.volunteer_id, state: r.state } },
      el("td", {}, r.name || volunteerName(r.volunteer_id)), el("td", {}, HW.label("kind_", r.kind)), el("td", {}, HW.label("r_", r.state)),
      el("td", {}, r.distance_m != null ? Math.round(r.distance_m) + " m" : ""))));
    document.getElementById("notifications").replaceChildren(header("recipient", "channel", "result"),
      ...state.notifications.map((n) => notificationRow(n, false)));
    document.getElementById("timeline").replaceChildren(...d.timeline.map((e) => timelineItem(e, d)));
    const act = (id, fn) => { const el = document.getElementById(id); if (el) el.onclick = fn; };
    act("notify-more", async () => { await HW.api(`/api/v1/incidents/${d.id}/notify-more?count=3`, { method: "POST" }); loadDetail(); });
    act("call-team", async () => { await HW.api(`/api/v1/incidents/${d.id}/call-team`, { method: "POST" }); loadDetail(); });
    act("resolve", async () => {
      await HW.api(`/api/v1/incidents/${d.id}/resolve`, { method: "POST", body: { outcome: document.getElementById("outcome").value, note: "" } });
      await loadIncidents(); loadDetail();
    });
    act("cancel", async () => {
      if (!confirm(t("really"))) return;
      await HW.api(`/api/v1/incidents/${d.id}/cancel`, { method: "POST", body: { note: "" } });
      await loadIncidents(); loadDetail();
    });
    act("replay", () => replay(d.elder_id));
    bindSighting(d);
    const outcome = document.getElementById("outcome");
    if (outcome) outcome.onchange = () => { state.outcome[d.id] = outcome.value; };
    bindReplay();
  }

  // A sighting corrects the Point Last Seen ("a neighbour saw her at the bus stop at
  // 14:10"): the place from a map click, the time in the dispatcher's own clock. What was
  // typed survives the panel's redraws (every feed event redraws it).
  function localInput(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }
  function sightingForm() {
    const s = state.sighting;
    return el("form", { id: "sighting", class: "sighting" },
      el("h4", {}, t("sighting")),
      el("p", { class: "muted" }, t("sighting_pick")),
      el("div", { class: "actions" },
        el("input", { id: "sighting-lat", type: "number", step: "any", value: s.lat || "", "aria-label": "lat", required: "required" }),
        el("input", { id: "sighting-lon", type: "number", step: "any", value: s.lon || "", "aria-label": "lon", required: "required" })),
      el("label", {}, t("sighting_time"), " ",
        el("input", { id: "sighting-time", type: "datetime-local", value: s.time || localInput(HW.now()), required: "required" })),
      el("input", { id: "sighting-note", maxlength: "1000", value: s.note || "", placeholder: t("sighting_note") }),
      el("button", { type: "submit", id: "sighting-save" }, t("sighting_save")),
      el("p", { id: "sighting-result", class: "muted" }, s.result || ""));
  }
  function bindSighting(d) {
    const form = document.getElementById("sighting");
    if (!form) return;
    const field = (name) => document.getElementById("sighting-" + name);
    for (const name of ["lat", "lon", "time", "note"]) field(name).oninput = () => { state.sighting[name] = field(name).value; };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const body = { at: { lat: Number(field("lat").value), lon: Number(field("lon").value) },
        time: new Date(field("time").value).toISOString(), note: field("note").value };
      try {
        const after = await HW.api(`/api/v1/incidents/${d.id}/sighting`, { method: "POST", body });
        const entry = [...after.timeline].reverse().find((e) => e.type === "sighting") || {};
        state.sighting = { result: `${t("sighting_saved")} · ` +
          (entry.repaged ? t("sighting_repaged") : HW.fmt("sighting_no_page", { why: HW.label("why_", entry.reason) })) };
      } catch (e) {
        state.sighting.result = `${t("error")}: ${e.message || e}`;
      }
      await loadDetail();
    };
  }
  M.map.on("click", (ev) => {
    if (!document.getElementById("sighting")) return;
    const [lat, lon] = M.wgs(ev.latlng.lat, ev.latlng.lng);
    state.sighting.lat = lat.toFixed(6); state.sighting.lon = lon.toFixed(6);
    document.getElementById("sighting-lat").value = state.sighting.lat;
    document.getElementById("sighting-lon").value = state.sighting.lon;
  });

  function banner(status, problems) {
    const el = document.getElementById("degraded");
    el.classList.toggle("hidden", status !== "degraded");
    el.textContent = `${t("degraded")}: ${(problems || []).join("; ")}`;
  }
  banner(overview.system, []);

  let refreshing = null;
  function refreshSoon() {
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      await loadIncidents();
      if (state.selected) await loadDetail();
      await loadLog();
      state.overview = await HW.api("/api/v1/overview"); drawOverview();
    }, 150);
  }
  const live = document.getElementById("live");
  HW.stream((type, data) => {
    if (type === "system") banner(data.status, data.problems);
    else refreshSoon();
  }, (s) => { live.textContent = s === "live" ? "● live" : "○ …"; live.dataset.state = s; });
  setInterval(refreshSoon, 15000);  // positions move without incident events

  drawOverview();
  await loadIncidents();
  await loadLog();
  // Start a drill (staff): now, or at a local time; the answer says which.
  function drawDrillForm() {
    const pick = document.getElementById("drill-elder");
    pick.replaceChildren(...state.overview.elders.map((e) => HW.el("option", { value: String(e.id) }, e.name || `#${e.id}`)));
    document.getElementById("start-drill").onclick = async () => {
      const startAt = document.getElementById("drill-start-at").value;
      const body = { elder_id: Number(pick.value), drill: true, announced: !document.getElementById("drill-unannounced").checked };
      if (startAt) body.start_at = new Date(startAt).toISOString();
      const result = document.getElementById("drill-result");
      try {
        const made = await HW.api("/api/v1/incidents", { method: "POST", body });
        result.textContent = made.start_at ? t("drill_scheduled") + HW.hhmm(made.start_at) : `${t("drill_started")} #${made.code}`;
        if (!made.start_at) { await loadIncidents(); select(made.id); }
      } catch (e) { result.textContent = String(e.message || e); }
    };
  }
  drawDrillForm();
})();
