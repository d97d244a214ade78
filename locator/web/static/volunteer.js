// The volunteer page: /v (my open alerts) and /v/{incident} (one alert, from the SMS link).
// Opening the page changes nothing: Accept is the confirm button the brief asks for.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const match = location.pathname.match(/^\/v\/(\d+)/);
  const incidentId = match ? Number(match[1]) : null;
  // The signed token has opened our session: keep it out of the history and the screen.
  if (location.search.indexOf("t=") >= 0) history.replaceState(null, "", location.pathname);

  let me = null;           // {role, subject, volunteer_id}
  let incident = null;
  let mine = null;         // my responder entry on the incident
  let mapView = null, layers = null;
  let watchId = null, lastSent = 0;
  const ENGAGED = ["accepted", "arrived"];

  function say(text, kind) { const el = $("status-line"); el.textContent = text || ""; el.className = "banner " + (kind || ""); }
  function show(id, on) { $(id).classList.toggle("hidden", !on); }
  function fail(err) { say(HW.t("error") + ": " + (err && err.message ? err.message : err), "degraded"); }

  function navLinks(lat, lon) {
    const [glat, glon] = HW.wgsToGcj(lat, lon);  // Apple Maps in China draws GCJ-02, no flag
    $("nav-amap").href = `https://uri.amap.com/marker?position=${lon},${lat}&coordinate=wgs84&callnative=1`;
    $("nav-baidu").href = `https://api.map.baidu.com/marker?location=${lat},${lon}&coord_type=wgs84&output=html&title=${encodeURIComponent(incident.elder_name || "")}&content=${encodeURIComponent(incident.code || "")}&src=webapp.homeward.volunteer`;
    $("nav-apple").href = `https://maps.apple.com/?ll=${glat.toFixed(6)},${glon.toFixed(6)}&q=${encodeURIComponent(incident.elder_name || "")}`;
    $("nav-geo").href = `geo:${lat},${lon}`;
  }

  function drawArea(area) {
    if (!mapView) { mapView = HW.map($("map"), [area.lat, area.lon]); $("map").dataset.noTiles = HW.t("map_no_tiles"); }
    const { map, ll } = mapView;
    if (layers) layers.remove();
    layers = L.layerGroup().addTo(map);
    const rings = (area.geo && area.geo.features || []).filter((f) => f.geometry.type === "Polygon").reverse();
    rings.forEach((f) => {
      const p = f.properties || {};
      L.polygon(HW.ring(f.geometry.coordinates[0], ll), { color: "#b26a00", weight: 1, fillOpacity: 0.06 })
        .bindTooltip(HW.tip(p.probability ? Math.round(p.probability * 100) + "% · " + Math.round(p.radius_m) + " m" : ""))
        .addTo(layers);
    });
    L.circleMarker(ll(area.lat, area.lon), { radius: 10, color: "#b3261e", fillColor: "#b3261e", fillOpacity: 0.9, className: "elder-marker" })
      .bindTooltip(HW.tip(incident.elder_name || "")).addTo(layers);
    const inner = rings.length ? rings[rings.length - 1] : null;
    if (inner) map.fitBounds(L.polygon(HW.ring(inner.geometry.coordinates[0], ll)).getBounds(), { maxZoom: 17 });
    else map.setView(ll(area.lat, area.lon), 16);
  }

  async function loadIncident() {
    incident = await HW.api(`/api/v1/incidents/${incidentId}`);
    mine = incident.responders.find((r) => r.volunteer_id === me.volunteer_id) || null;
    $("elder-name").textContent = incident.elder_name || "";
    $("code").textContent = incident.code;
    const st = $("status"); st.className = "pill " + incident.status; st.textContent = HW.t("status_" + incident.status);
    let area = null;
    try {
      const geo = await HW.api(`/api/v1/incidents/${incidentId}/search-area`);
      const seen = geo.features[0];
      const props = geo.properties || {};
      area = { geo, lat: seen.geometry.coordinates[1], lon: seen.geometry.coordinates[0], acc: seen.properties.accuracy_m,
        seenAt: Date.parse(seen.properties.last_seen_at || geo.features[0].properties.last_seen_at || ""), elapsed: props.elapsed_s };
      // "now" on the server's clock = last seen + elapsed since: minutes since t0 on that clock.
      const lastSeen = Date.parse((geo.properties && geo.properties.last_seen_at) || "");
      const nowServer = isNaN(lastSeen) ? HW.now() : lastSeen + (props.elapsed_s || 0) * 1000;
      const minutes = Math.max(0, Math.round((nowServer - Date.parse(incident.t0)) / 60000));
      $("since").textContent = HW.t("missing_for").replace("{m}", minutes);
      // Rings grow from the Point Last Seen: say where and how long ago, and who said so.
      $("last-seen").textContent = props.mode === "live"
        ? `${area.lat.toFixed(5)}, ${area.lon.toFixed(5)} · ±${Math.round(area.acc || 0)} m · ${HW.t("fresh")}`
        : HW.lastSeen(geo) || HW.t("last_seen") + " " + HW.hhmm(lastSeen ? new Date(lastSeen).toISOString() : null);
    } catch (e) {
      if (incident.origin) area = { geo: null, lat: incident.origin.lat, lon: incident.origin.lon, acc: 0 };
    }
    if (area) { navLinks(area.lat, area.lon); drawArea(area); }
    renderActions();
    if (!$("description").dataset.loaded) {
      try {
        const elder = await HW.api(`/api/v1/elders/${incident.elder_id}`);
        $("description").textContent = elder.description || "";
        $("description").dataset.loaded = "1";
        if (elder.photo_url) { $("photo").src = elder.photo_url; $("photo").alt = elder.name; show("photo", true); }
      } catch (e) { /* a volunteer reads the elder only while the incident concerns them */ }
    }
  }

  function renderActions() {
    const closed = incident.status === "resolved" || incident.status === "cancelled";
    const state = mine ? mine.state : null;
    show("closed", closed);
    show("answer", !closed && !!mine && !ENGAGED.includes(state));
    show("working", !closed && ENGAGED.includes(state));
    show("arrive", state === "accepted");
    document.body.dataset.responder = state || "";
    document.body.dataset.incident = incident.status;
    if (closed) { stopSharing(); say(HW.t("v_closed"), ""); }
    else if (state === "arrived") say(HW.t("v_on_site"), "ok");
    else if (state === "accepted") say(HW.t("v_accepted"), "ok");
    else if (state === "declined") say(HW.t("v_declined"), "");
    else if (state === "stood_down") say(HW.t("v_covered"), "");
    else say("", "");
  }

  // A second tap for anything that cannot be taken back (decline, withdraw, found).
  function confirmThen(text, action) {
    $("confirm-text").textContent = text;
    show("confirm", true);
    $("confirm-yes").focus();
    $("confirm-yes").onclick = async () => { show("confirm", false); await action(); };
    $("confirm-no").onclick = () => show("confirm", false);
  }

  let acting = false;  // an answer in flight: its reply, not a reload, says what happened
  async function act(action, body) {
    acting = true;
    try {
      incident = await HW.api(`/api/v1/incidents/${incidentId}/${action}`, { method: "POST", body });
      mine = incident.responders.find((r) => r.volunteer_id === me.volunteer_id) || mine;
      renderActions();
    } catch (e) { fail(e); } finally { acting = false; }
  }

  // Share my location: each fix (at most one per 10 s) drives automatic on-site.
  function startSharing() {
    if (watchId !== null || !navigator.geolocation) return;
    $("share").setAttribute("aria-pressed", "true");
    $("share").textContent = HW.t("sharing");
    watchId = navigator.geolocation.watchPosition(async (pos) => {
      const now = HW.now();
      if (now - lastSent < 10000) return;
      lastSent = now;
      const body = { lat: +pos.coords.latitude.toFixed(6), lon: +pos.coords.longitude.toFixed(6), acc: Math.max(1, Math.round(pos.coords.accuracy || 50)) };
      try {
        await HW.api(`/api/v1/volunteers/${me.volunteer_id}/location`, { method: "POST", body });
        $("share-state").textContent = HW.t("location_sent") + " " + new Date().toLocaleTimeString(HW.getLocale());
        if (incidentId) { await loadIncident(); }
      } catch (e) { fail(e); }
    }, (err) => { $("share-state").textContent = HW.t("location_denied") + " (" + err.message + ")"; stopSharing(); },
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 });
  }
  function stopSharing() {
    if (watchId !== null) navigator.geolocation.clearWatch(watchId);
    watchId = null; lastSent = 0;
    $("share").setAttribute("aria-pressed", "false");
    $("share").textContent = HW.t("share_location");
  }

  async function loadList() {
    const page = await HW.api("/api/v1/incidents?status=open");
    const box = $("alerts");
    if (!page.items.length) { box.replaceChildren(HW.el("p", { class: "card muted" }, HW.t("no_alerts"))); return; }
    box.replaceChildren(...page.items.map((i) => {
      const r = i.responders.find((x) => x.volunteer_id === me.volunteer_id);
      return HW.el("a", { class: "card alert-link", href: `/v/${Number(i.id)}` },
        HW.el("b", {}, i.elder_name || ""), " ", HW.el("span", { class: `pill ${i.status}` }, HW.t("status_" + i.status)),
        HW.el("br"), HW.el("span", { class: "muted" }, `${HW.t("code")} ${i.code} · ${HW.hhmm(i.t0)}` + (r ? " · " + HW.t("r_" + r.state) : "")));
    }));
  }

  async function loadMe() {
    const v = await HW.api(`/api/v1/volunteers/${me.volunteer_id}`);
    $("on-duty").checked = !!v.on_duty;
    $("quiet-start").value = v.quiet_hours ? v.quiet_hours.start : "";
    $("quiet-end").value = v.quiet_hours ? v.quiet_hours.end : "";
    show("me", true);
    const patch = async (body) => {
      try { await HW.api(`/api/v1/volunteers/${me.volunteer_id}`, { method: "PATCH", body }); $("me-state").textContent = HW.t("saved"); }
      catch (e) { $("me-state").textContent = HW.t("error") + ": " + e.message; }
    };
    $("on-duty").onchange = () => patch({ on_duty: $("on-duty").checked });
    $("quiet-save").onclick = () => {
      const start = $("quiet-start").value, end = $("quiet-end").value;
      if (start && end) patch({ quiet_hours: { start, end } });
    };
    $("quiet-clear").onclick = () => { $("quiet-start").value = ""; $("quiet-end").value = ""; patch({ quiet_hours: null }); };
    // Web push: only where the browser has it and the server has a VAPID key (SMS stays the
    // guaranteed channel; FCM-based push does not reach mainland China).
    const key = HW.config.vapid_public_key;
    if (key && "serviceWorker" in navigator && "PushManager" in window) {
      show("push", true);
      $("push").onclick = async () => {
        try {
          const reg = await navigator.serviceWorker.register("/static/sw.js");
          const raw = atob(key.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((key.length + 3) % 4));
          const sub = await reg.pushManager.subscribe({ userVisibleOnly: true,
            applicationServerKey: Uint8Array.from(raw, (c) => c.charCodeAt(0)) });
          await HW.api(`/api/v1/volunteers/${me.volunteer_id}/push-subscriptions`, { method: "POST", body: sub.toJSON() });
          $("me-state").textContent = HW.t("push_on");
        } catch (e) { $("me-state").textContent = HW.t("push_failed") + " (" + e.message + ")"; }
      };
    }
  }

  async function main() {
    HW.applyI18n();
    $("lang").onclick = () => { HW.setLocale(HW.getLocale() === "en" ? "zh-CN" : "en"); HW.applyI18n(); if (incident) { renderActions(); loadIncident().catch(fail); } };
    await HW.loadConfig();
    me = await HW.whoami();
    if (!me.volunteer_id) { say(HW.t("v_only"), "degraded"); return; }
    $("accept").onclick = () => act("ack");
    $("decline").onclick = () => confirmThen(HW.t("decline") + " — " + HW.t("really"), () => act("decline"));
    $("withdraw").onclick = () => confirmThen(HW.t("withdraw") + " — " + HW.t("really"), () => { stopSharing(); return act("withdraw"); });
    $("arrive").onclick = () => act("arrive");
    $("found").onclick = () => confirmThen(HW.t("found") + ": " + $("outcome").selectedOptions[0].textContent + " — " + HW.t("really"),
      () => act("found", { outcome: $("outcome").value, note: $("found-note").value }));
    $("share").onclick = () => (watchId === null ? startSharing() : stopSharing());
    loadMe().catch(fail);
    if (incidentId) {
      show("alert", true);
      try { await loadIncident(); } catch (e) {
        if (e.status === 403 || e.status === 404) { say(HW.t("forbidden"), "degraded"); show("alert", false); return; }
        throw e;
      }
      // Live: every change to this incident arrives on the event feed; the poll is a backstop.
      // Closed is final, and an SMS link's session ends with the incident: stop asking.
      const over = () => acting || incident.status === "resolved" || incident.status === "cancelled";
      HW.stream((type, data) => { if (data.incident_id === Number(incidentId) && !over()) loadIncident().catch(() => {}); });
      setInterval(() => { if (document.visibilityState === "visible" && !over()) loadIncident().catch(() => {}); }, 15000);
    } else {
      show("list", true);
      await loadList();
      HW.stream((type) => { if (type === "incident") loadList().catch(() => {}); });
      setInterval(() => loadList().catch(() => {}), 30000);
    }
  }
  main().catch(fail);
})();
