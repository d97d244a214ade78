// The family portal: /family (my elders, register one) and /family/elders/{id} (zones,
// bracelet, where she is, pause, report missing, incidents and notices).
// Coordinates are WGS-84 everywhere in this file; the map shifts them for AMap tiles.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const match = location.pathname.match(/^\/family\/elders\/(\d+)/);
  const elderId = match ? Number(match[1]) : null;
  const HAINING = [30.5112, 120.6853];
  const r6 = (x) => Math.round(x * 1e6) / 1e6;
  let elder = null, mapView = null, draftLayer = null, dataLayer = null;
  let draft = [];  // WGS-84 [lat, lon] points clicked on the map

  function say(text, kind) { const el = $("status-line"); el.textContent = text || ""; el.className = "banner " + (kind || ""); }
  function show(id, on) { $(id).classList.toggle("hidden", !on); }
  function fail(err) { say(HW.t("error") + ": " + (err && err.message ? err.message : err), "degraded"); }
  function confirmThen(text, action) {
    $("confirm-text").textContent = text;
    show("confirm", true);
    $("confirm-yes").focus();
    $("confirm-yes").onclick = async () => { show("confirm", false); try { await action(); } catch (e) { fail(e); } };
    $("confirm-no").onclick = () => show("confirm", false);
  }

  // ---- /family ---------------------------------------------------------------------------
  function guardianRow(g) {
    const row = document.createElement("div");
    row.className = "guardian row3";
    row.append(
      HW.el("input", { class: "g-name", maxlength: "64", required: "", placeholder: HW.t("f_g_name"), "aria-label": HW.t("f_g_name") }),
      HW.el("input", { class: "g-phone", type: "tel", required: "", placeholder: "+86…", "aria-label": HW.t("f_g_phone") }),
      HW.el("input", { class: "g-relation", maxlength: "32", placeholder: HW.t("f_g_relation"), "aria-label": HW.t("f_g_relation") }));
    if (g) { row.querySelector(".g-name").value = g.name; row.querySelector(".g-phone").value = g.phone; row.querySelector(".g-relation").value = g.relation || ""; }
    $("guardians").appendChild(row);
  }

  async function loadHome() {
    show("home", true);
    const flash = sessionStorage.getItem("hw.flash");  // e.g. "her data was deleted"
    if (flash) { sessionStorage.removeItem("hw.flash"); say(flash, "ok"); }
    const page = await HW.api("/api/v1/elders");
    const box = $("elders");
    box.replaceChildren(...page.items.map((e) => HW.el("a", { class: "card elder-link", href: `/family/elders/${Number(e.id)}` },
      HW.el("b", {}, e.name), HW.el("br"), HW.el("span", { class: "muted" }, e.address || ""))));
    if (!page.items.length) show("register", true);
    $("new-elder").onclick = () => { show("register", true); homeMap(); $("e-name").focus(); };
    $("add-guardian").onclick = () => guardianRow();
    guardianRow();
    if (!page.items.length) homeMap();
    $("register").onsubmit = async (ev) => {
      ev.preventDefault();
      const guardians = Array.from(document.querySelectorAll("#guardians .guardian"))
        .map((row) => ({ name: row.querySelector(".g-name").value.trim(), phone: row.querySelector(".g-phone").value.replace(/[\s-]/g, ""),
          relation: row.querySelector(".g-relation").value.trim() }))
        .filter((g) => g.name || g.phone);
      const body = { name: $("e-name").value.trim(), address: $("e-address").value.trim(),
        home: { lat: r6(Number($("e-lat").value)), lon: r6(Number($("e-lon").value)) },
        description: $("e-description").value, medical_notes: $("e-medical").value, guardians };
      if ($("e-photo").value.trim()) body.photo_url = $("e-photo").value.trim();
      try {
        const made = await HW.api("/api/v1/elders", { method: "POST", body });
        const file = $("e-photo-file").files[0];
        if (file) {
          // She is registered whatever happens to the photo: never a second elder on retry.
          try { await uploadPhoto(made.id, file); }
          catch (e) { sessionStorage.setItem("hw.flash", HW.t("f_photo_failed") + ": " + e.message); }
        }
        location.href = `/family/elders/${made.id}`;
      } catch (e) { fail(e); }
    };
  }

  // A phone camera's picture is several MB: shrink it here to ~1600 px JPEG (a few hundred
  // kB), plenty to recognise a face, and under the server's 1 MB.
  const PHOTO_EDGE = 1600, PHOTO_BYTES = 900 * 1024;
  async function shrink(file) {
    let bitmap;
    try { bitmap = await createImageBitmap(file); } catch (e) { return file; }
    let scale = Math.min(1, PHOTO_EDGE / Math.max(bitmap.width, bitmap.height));
    if (scale === 1 && file.size <= PHOTO_BYTES) return file;
    for (const quality of [0.85, 0.7, 0.55, 0.4]) {
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", quality));
      if (blob && blob.size <= PHOTO_BYTES) return blob;
      scale *= 0.8;
    }
    return file;  // the server will say why
  }

  // The picture itself, not a link to one: what volunteers and the police will look at.
  async function uploadPhoto(id, file) {
    const picture = await shrink(file);
    const res = await fetch(`/api/v1/elders/${id}/photo`, {
      method: "PUT", body: picture, credentials: "same-origin",
      headers: { "X-Homeward": "1", "Content-Type": picture.type || "application/octet-stream" },
    });
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      const err = new Error(JSON.stringify(data && data.detail)); err.status = res.status; throw err;
    }
    return res.json();
  }

  let homeMapView = null;
  function homeMap() {
    if (homeMapView) return;
    homeMapView = HW.map($("home-map"), HAINING);  // WGS-84: HW.map shifts for AMap
    $("home-map").dataset.noTiles = HW.t("map_no_tiles");
    let marker = null;
    const set = (lat, lon) => {
      $("e-lat").value = r6(lat); $("e-lon").value = r6(lon);
      if (marker) marker.remove();
      marker = L.marker(homeMapView.ll(lat, lon)).addTo(homeMapView.map);
    };
    homeMapView.map.on("click", (e) => { const [lat, lon] = homeMapView.wgs(e.latlng.lat, e.latlng.lng); set(lat, lon); });
    set(HAINING[0], HAINING[1]);
  }

  // ---- /family/elders/{id} ---------------------------------------------------------------
  function shape() { return document.querySelector("input[name=shape]:checked").value; }

  function drawDraft() {
    const { map, ll } = mapView;
    if (draftLayer) draftLayer.remove();
    draftLayer = L.layerGroup().addTo(map);
    const list = $("draft-points");
    list.replaceChildren(...draft.map(([lat, lon]) => HW.el("li", {}, `${lat.toFixed(6)}, ${lon.toFixed(6)}`)));
    const style = { color: "#12355b", dashArray: "6 4", weight: 3, fillOpacity: 0.1 };
    if (shape() === "circle" && draft.length) {
      L.circle(ll(draft[0][0], draft[0][1]), { ...style, radius: Number($("z-radius").value) || 200 }).addTo(draftLayer);
    } else if (draft.length) {
      draft.forEach(([lat, lon]) => L.circleMarker(ll(lat, lon), { radius: 6, color: "#12355b" }).addTo(draftLayer));
      if (draft.length > 1) L.polygon(draft.map(([lat, lon]) => ll(lat, lon)), style).addTo(draftLayer);
    }
    $("draw-hint").textContent = HW.t(shape() === "circle" ? "f_hint_circle" : "f_hint_polygon");
    show("radius-row", shape() === "circle");
  }

  function scheduleBody() {
    if (!$("z-night").checked) return null;
    const days = Array.from(document.querySelectorAll("#days input:checked")).map((i) => Number(i.value));
    return [{ days, start: $("z-start").value, end: $("z-end").value }];
  }

  async function saveZone() {
    const props = { kind: $("z-kind").value, name: $("z-name").value.trim() };
    const schedule = scheduleBody();
    if (schedule) props.schedule = schedule;
    let geometry;
    if (shape() === "circle") {
      if (draft.length !== 1) { say(HW.t("f_hint_circle"), "degraded"); return; }
      geometry = { type: "Point", coordinates: [draft[0][1], draft[0][0]] };
      props.radius_m = Number($("z-radius").value);
    } else {
      if (draft.length < 3) { say(HW.t("f_hint_polygon"), "degraded"); return; }
      const ring = draft.map(([lat, lon]) => [lon, lat]);
      ring.push(ring[0]);
      geometry = { type: "Polygon", coordinates: [ring] };
    }
    try {
      const made = await HW.api(`/api/v1/elders/${elderId}/zones`, { method: "POST", body: { type: "Feature", geometry, properties: props } });
      draft = []; drawDraft();
      say(HW.t("saved") + ((made.warnings || []).length ? " · " + made.warnings.join("; ") : ""), "ok");
      await loadZones();
    } catch (e) { fail(e); }
  }

  function scheduleText(s) {
    if (!s || !s.length) return HW.t("f_always");
    return s.map((w) => `${w.start}–${w.end} (${w.days.length === 7 ? HW.t("f_every_day") : w.days.map((d) => HW.t("day" + d)).join(" ")})`).join(", ");
  }

  let zones = [];
  async function loadZones() {
    const page = await HW.api(`/api/v1/elders/${elderId}/zones`);
    zones = page.items || page;
    const list = $("zones");
    list.replaceChildren();
    zones.forEach((z) => {
      const p = z.properties;
      const what = z.geometry.type === "Point" ? `${HW.t("f_circle")} ${Math.round(p.radius_m)} m` : HW.t("f_polygon");
      const li = HW.el("li", { class: "zone", data: { zone: z.id } },
        HW.el("span", {}, HW.el("b", {}, p.name || HW.t("f_" + p.kind)), ` · ${HW.t("f_" + p.kind)} · ${what}`, HW.el("br"),
          HW.el("span", { class: "muted" }, scheduleText(p.schedule))),
        HW.el("button", { type: "button", class: "del", "aria-label": HW.t("delete") }, HW.t("delete")));
      li.querySelector(".del").onclick = () => confirmThen(HW.t("delete") + " — " + HW.t("really"), async () => {
        await HW.api(`/api/v1/elders/${elderId}/zones/${z.id}`, { method: "DELETE" }); await loadZones();
      });
      list.appendChild(li);
    });
    drawData();
  }

  let position = null, track = null;
  function drawData() {
    const { map, ll } = mapView;
    if (dataLayer) dataLayer.remove();
    dataLayer = L.layerGroup().addTo(map);
    if (elder.home) L.marker(ll(elder.home.lat, elder.home.lon), { title: HW.t("f_home") }).addTo(dataLayer);
    zones.forEach((z) => {
      const color = z.properties.kind === "danger" ? "#b3261e" : "#0a7d32";
      const style = { color, weight: 2, fillOpacity: 0.08, dashArray: z.properties.schedule ? "4 4" : null };
      if (z.geometry.type === "Point") {
        const [lon, lat] = z.geometry.coordinates;
        L.circle(ll(lat, lon), { ...style, radius: z.properties.radius_m }).addTo(dataLayer);
      } else {
        const polys = z.geometry.type === "Polygon" ? [z.geometry.coordinates] : z.geometry.coordinates;
        polys.forEach((poly) => L.polygon(HW.ring(poly[0], ll), style).addTo(dataLayer));
      }
    });
    if (track && track.features.length) {
      L.polyline(track.features.map((f) => ll(f.geometry.coordinates[1], f.geometry.coordinates[0])), { color: "#5b6270", weight: 3, className: "track-line" }).addTo(dataLayer);
    }
    if (position) {
      L.circle(ll(position.lat, position.lon), { radius: Math.max(position.acc || 0, 5), color: "#1565c0", weight: 1, fillOpacity: 0.15 }).addTo(dataLayer);
      L.circleMarker(ll(position.lat, position.lon), { radius: 9, color: "#fff", weight: 2, fillColor: position.stale ? "#888" : "#1565c0", fillOpacity: 1, className: "elder-marker" })
        .bindTooltip(HW.tip(elder.name)).addTo(dataLayer);
    }
  }

  async function loadWhere() {
    try { position = await HW.api(`/api/v1/elders/${elderId}/position`); } catch (e) { position = null; }
    const midnight = new Date(HW.now()); midnight.setHours(0, 0, 0, 0);
    try { track = await HW.api(`/api/v1/elders/${elderId}/track?since=${encodeURIComponent(midnight.toISOString())}`); } catch (e) { track = null; }
    $("where").textContent = position
      ? `${HW.t("f_position")}: ${HW.hhmm(position.tst)} · ±${Math.round(position.acc || 0)} m` + (position.battery != null ? ` · ${HW.t("f_battery")} ${position.battery}%` : "") + (position.stale ? " · " + HW.t("stale") : "")
      : HW.t("f_no_position");
    drawData();
  }

  async function loadDevice() {
    if (!elder.device_id) { show("pair", true); $("device-state").textContent = HW.t("f_no_device"); show("owntracks", false); return; }
    const d = await HW.api(`/api/v1/devices/${encodeURIComponent(elder.device_id)}`);
    show("pair", false);
    // A TCP bracelet (GT06, JT/T 808, watch, H02): its protocol, connection and last command's answer.
    const kind = d.gateway ? HW.gatewayLine(d) : d.protocol === "owntracks" ? "OwnTracks " + d.external_id : HW.t("f_native");
    $("device-state").textContent = `${d.device_id} · ${kind} · ` +
      (d.online ? HW.t("f_online") : HW.t("f_offline")) + (d.battery != null ? ` · ${HW.t("f_battery")} ${d.battery}%` : "");
    if (d.protocol === "owntracks") {
      // One source for the QR, the link and the text: the server's settings document.
      const setup = await HW.api(`/api/v1/devices/${encodeURIComponent(d.device_id)}/owntracks`);
      const c = setup.config;
      $("ot-text").textContent = [
        `${HW.t("f_ot_mode")}: MQTT`,
        `Host: ${c.host}`,
        `Port: ${c.port}`,
        `TLS: ${c.tls ? "on" : "off"}`,
        `UserID / Username: ${c.username}`,
        `DeviceID: ${c.deviceId}`,
        `TrackerID: ${c.tid}`,
        `Topic: owntracks/${c.username}/${c.deviceId}`,
        `${HW.t("f_ot_monitoring")}: Move`,
      ].join("\n");
      $("ot-qr").src = setup.qr; $("ot-qr").alt = HW.t("f_ot_scan");
      $("ot-open").href = setup.url;
      show("owntracks", true);
    } else show("owntracks", false);
  }

  async function loadPause() {
    try {
      const p = await HW.api(`/api/v1/elders/${elderId}/pause`);
      $("pause-state").textContent = p && p.until ? `${HW.t("f_paused_until")} ${HW.hhmm(p.until)} ${p.reason ? "· " + p.reason : ""}` : "";
      document.body.dataset.paused = p && p.until ? "1" : "";
    } catch (e) { $("pause-state").textContent = ""; document.body.dataset.paused = ""; }
  }

  async function loadIncidents() {
    const page = await HW.api(`/api/v1/incidents?status=all&elder_id=${elderId}&limit=20`);
    const list = $("incidents");
    list.replaceChildren();
    const mine = page.items;
    // The newest incident at the top: open ones in red, a recent outcome in green.
    const latest = mine[0];
    const box = $("latest");
    box.classList.toggle("hidden", !latest);
    if (latest) {
      const open = !["resolved", "cancelled"].includes(latest.status);
      const who = latest.responders.filter((r) => ["accepted", "arrived"].includes(r.state)).map((r) => r.name).join("、");
      box.className = "card latest " + (open ? "open" : "closed");
      box.replaceChildren(HW.el("b", {}, HW.t(open ? "f_incident_open" : "f_incident_last")), ` · ${HW.t("trigger_" + latest.trigger)} · `,
        HW.el("span", { class: `pill ${latest.status}` }, HW.t("status_" + latest.status)),
        ...(who ? [HW.el("br"), `${HW.t("responders")}: ${who}`] : []),
        ...(latest.outcome ? [HW.el("br"), `${HW.t("outcome")}: ${HW.t(latest.outcome)} · ${HW.hhmm(latest.resolved_at)}`] : []));
    }
    if (!mine.length) list.replaceChildren(HW.el("li", { class: "muted" }, HW.t("no_incidents")));
    mine.forEach((i) => {
      const who = i.responders.filter((r) => r.state === "accepted" || r.state === "arrived").map((r) => r.name).join("、");
      list.appendChild(HW.el("li", { class: "incident", data: { incident: i.id, status: i.status } },
        HW.el("span", { class: `pill ${i.status}` }, HW.t("status_" + i.status)), " ",
        HW.el("b", {}, HW.t("trigger_" + i.trigger)), ` · ${HW.hhmm(i.t0)}`,
        ...(who ? [HW.el("br"), `${HW.t("responders")}: ${who}`] : []),
        ...(i.on_site_at ? [HW.el("br"), `${HW.t("on_site")} ${HW.hhmm(i.on_site_at)}`] : []),
        ...(i.outcome ? [HW.el("br"), `${HW.t("outcome")}: `, HW.el("b", { class: "outcome" }, HW.t(i.outcome)), ` ${HW.hhmm(i.resolved_at)}`] : [])));
    });
  }

  async function loadNotices() {
    const page = await HW.api(`/api/v1/elders/${elderId}/notices`);
    const list = $("notices");
    list.replaceChildren();
    if (!page.items.length) list.replaceChildren(HW.el("li", { class: "muted" }, HW.t("f_no_notices")));
    page.items.slice(0, 20).forEach((n) => {
      const li = document.createElement("li");
      const at = typeof n.at === "number" ? new Date(n.at * 1000).toISOString() : n.at;
      li.textContent = `${HW.hhmm(at)} · ${n.text || HW.t("notice_" + n.type)}`;
      list.appendChild(li);
    });
  }

  async function loadElder() {
    show("elder", true);
    const flash = sessionStorage.getItem("hw.flash");
    if (flash) { sessionStorage.removeItem("hw.flash"); say(flash, "degraded"); }
    elder = await HW.api(`/api/v1/elders/${elderId}`);
    $("elder-name").textContent = elder.name;
    $("elder-description").textContent = elder.description || "";
    if (elder.photo_url) { $("photo").src = elder.photo_url; $("photo").alt = elder.name; show("photo", true); }
    $("photo-file").onchange = async () => {
      const file = $("photo-file").files[0];
      if (!file) return;
      try {
        elder = await uploadPhoto(elderId, file);
        $("photo").src = elder.photo_url; $("photo").alt = elder.name; show("photo", true);
        say(HW.t("saved"), "ok");
      } catch (e) { fail(e); }
    };
    mapView = HW.map($("map"), [elder.home.lat, elder.home.lon]);  // WGS-84: HW.map shifts for AMap
    $("map").dataset.noTiles = HW.t("map_no_tiles");
    mapView.map.on("click", (e) => {
      const [lat, lon] = mapView.wgs(e.latlng.lat, e.latlng.lng);
      if (shape() === "circle") draft = [[r6(lat), r6(lon)]]; else draft.push([r6(lat), r6(lon)]);
      drawDraft();
    });
    document.querySelectorAll("input[name=shape]").forEach((i) => { i.onchange = () => { draft = []; drawDraft(); }; });
    $("z-radius").oninput = drawDraft;
    $("z-night").onchange = () => show("schedule", $("z-night").checked);
    const days = $("days");
    for (let d = 1; d <= 7; d += 1) {
      days.appendChild(HW.el("label", {}, HW.el("input", { type: "checkbox", value: String(d), checked: true }), " ", HW.el("span", {}, HW.t("day" + d))));
    }
    $("draw-clear").onclick = () => { draft = []; drawDraft(); };
    $("zone-save").onclick = saveZone;
    $("d-protocol").onchange = () => show("ot-row", $("d-protocol").value === "owntracks");
    $("pair").onsubmit = async (ev) => {
      ev.preventDefault();
      const body = { device_id: $("d-id").value.trim(), elder_id: elderId, protocol: $("d-protocol").value, claim_code: $("d-code").value.trim() };
      if (body.protocol === "owntracks") body.external_id = $("d-ext").value.trim();
      try { await HW.api("/api/v1/devices", { method: "POST", body }); elder = await HW.api(`/api/v1/elders/${elderId}`); await loadDevice(); say(HW.t("saved"), "ok"); }
      catch (e) { fail(e); }
    };
    $("ot-copy").onclick = () => { if (navigator.clipboard) navigator.clipboard.writeText($("ot-text").textContent); };
    $("pause").onclick = async () => {
      const until = new Date(HW.now() + Number($("p-hours").value) * 3600000).toISOString();
      try { await HW.api(`/api/v1/elders/${elderId}/pause`, { method: "PUT", body: { until, reason: $("p-reason").value } }); await loadPause(); say(HW.t("saved"), "ok"); }
      catch (e) { fail(e); }
    };
    $("resume").onclick = async () => { try { await HW.api(`/api/v1/elders/${elderId}/pause`, { method: "DELETE" }); await loadPause(); } catch (e) { fail(e); } };
    $("missing").onclick = () => confirmThen(HW.t("f_missing") + " — " + HW.t("really"), async () => {
      await HW.api("/api/v1/incidents", { method: "POST", body: { elder_id: elderId, note: $("m-note").value } });
      say(HW.t("f_missing_sent"), "ok");
      await loadIncidents();
    });
    drawDraft();
    await Promise.all([loadZones(), loadWhere(), loadDevice(), loadPause(), loadIncidents(), loadNotices(),
      HWPrivacy.init(elderId, elder, say, fail)]);
    // Incidents and notices arrive live on the event feed (own elders only); positions by poll.
    HW.stream((type, data) => {
      if (data.elder_id !== Number(elderId)) return;
      loadIncidents().catch(() => {});
      if (type === "notice") loadNotices().catch(() => {});
    });
    setInterval(() => { if (document.visibilityState === "visible") { loadWhere().catch(() => {}); loadIncidents().catch(() => {}); } }, 15000);
  }

  async function main() {
    HW.applyI18n();
    $("lang").onclick = () => { HW.setLocale(HW.getLocale() === "en" ? "zh-CN" : "en"); location.reload(); };
    $("logout").onclick = () => HW.logout();
    await HW.loadConfig();
    if (elderId) await loadElder(); else await loadHome();
  }
  main().catch(fail);
})();
