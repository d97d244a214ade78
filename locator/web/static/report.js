// The console's report view: the 3/10 promise as charts (compliance bars, response-time
// histograms against the deadline, per-volunteer answers), for real incidents or drills.
// Any report document from GET /api/v1/reports/sla draws the same way; every label is a
// text node (createElementNS + textContent), every colour a class in app.css (the CSP
// forbids inline styles).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const WORDS = {
    "zh-CN": {
      report: "报告", board: "调度台", real: "真实事件", drill: "演练", title_real: "响应承诺（真实事件）",
      title_drill: "响应承诺（演练）", overall: "全部", no_team: "无救援队", respond: "3 分钟响应", onsite: "10 分钟到场",
      compliance: "达标率", respond_times: "响应时间（秒）", onsite_times: "到场时间（秒）", limit_respond: "3 分钟",
      limit_onsite: "10 分钟", incidents: "事件", counted: "计入", p50: "中位数", p90: "P90", none: "暂无数据",
      volunteers: "志愿者应答", alerted: "呼叫", accepts: "接受", failed: "报告加载失败",
    },
    en: {
      report: "Report", board: "Board", real: "Real incidents", drill: "Drills", title_real: "The promise (real incidents)",
      title_drill: "The promise (drills)", overall: "All", no_team: "No team", respond: "Respond ≤ 3 min", onsite: "On site ≤ 10 min",
      compliance: "Compliance", respond_times: "Time to respond (s)", onsite_times: "Time on site (s)", limit_respond: "3 min",
      limit_onsite: "10 min", incidents: "incidents", counted: "counted", p50: "p50", p90: "p90", none: "No data yet",
      volunteers: "Volunteers' answers", alerted: "alerted", accepts: "accepted", failed: "Could not load the report",
    },
  };
  const say = (key) => (WORDS[HW.getLocale()] || WORDS.en)[key] || key;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text != null) node.textContent = String(text);
    return node;
  }

  // Compliance bars: per group a respond bar and an on-site bar, 0–100 %.
  function complianceChart(groups) {
    const barW = 22, gap = 30, top = 16, height = 150, left = 36;
    const width = left + groups.length * (2 * barW + gap) + 10;
    const chart = svg("svg", { class: "chart compliance", viewBox: `0 0 ${width} ${top + height + 44}`, role: "img", "aria-label": say("compliance") });
    for (const pct of [0, 50, 100]) {
      const y = top + height * (1 - pct / 100);
      chart.append(svg("line", { class: "grid", x1: left, x2: width - 6, y1: y, y2: y }), svg("text", { class: "axis", x: left - 4, y: y + 4, "text-anchor": "end" }, `${pct}%`));
    }
    groups.forEach((g, i) => {
      const x0 = left + 8 + i * (2 * barW + gap);
      [["respond", g.respond], ["onsite", g.onsite]].forEach(([kind, value], k) => {
        const x = x0 + k * barW;
        if (value == null) { chart.append(svg("text", { class: "value none", x: x + barW / 2, y: top + height - 4, "text-anchor": "middle" }, "—")); return; }
        const h = height * value / 100;
        const bar = svg("rect", { class: `bar ${kind}`, x, y: top + height - h, width: barW - 3, height: h, "data-group": g.key, "data-value": value });
        bar.append(svg("title", {}, `${g.label} · ${say(kind)}: ${value}%`));
        chart.append(bar, svg("text", { class: "value", x: x + barW / 2 - 1, y: top + height - h - 3, "text-anchor": "middle" }, Math.round(value)));
      });
      chart.append(svg("text", { class: "label", x: x0 + barW, y: top + height + 16, "text-anchor": "middle" }, g.label),
        svg("text", { class: "axis", x: x0 + barW, y: top + height + 30, "text-anchor": "middle" }, `${g.counted}/${g.incidents}`));
    });
    return chart;
  }

  // A histogram of seconds in bins of `step` up to `max` (one more bin for later), with the
  // deadline drawn as a line: the bins past it are the breaches.
  function histogram(values, { limit, step, max, label }) {
    const bins = Array(Math.ceil(max / step) + 1).fill(0);
    for (const v of values) bins[Math.min(bins.length - 1, Math.floor(v / step))] += 1;
    const most = Math.max(1, ...bins), barW = 16, top = 14, height = 110, left = 28;
    const width = left + bins.length * barW + 10;
    const chart = svg("svg", { class: "chart histogram", viewBox: `0 0 ${width} ${top + height + 34}`, role: "img", "aria-label": label });
    chart.append(svg("text", { class: "axis", x: left - 4, y: top + 4, "text-anchor": "end" }, most), svg("text", { class: "axis", x: left - 4, y: top + height, "text-anchor": "end" }, 0));
    bins.forEach((count, i) => {
      const h = height * count / most, x = left + i * barW;
      const bin = svg("rect", { class: `bin${i * step >= limit ? " late" : ""}`, x, y: top + height - h, width: barW - 2, height: h, "data-count": count });
      bin.append(svg("title", {}, i === bins.length - 1 ? `≥ ${i * step} s: ${count}` : `${i * step}–${(i + 1) * step} s: ${count}`));
      chart.append(bin);
      if (i % 4 === 0) chart.append(svg("text", { class: "axis", x, y: top + height + 14 }, i === bins.length - 1 ? `${i * step}+` : i * step));
    });
    const x = left + (limit / step) * barW - 1;
    chart.append(svg("line", { class: "limit", x1: x, x2: x, y1: top - 6, y2: top + height }),
      svg("text", { class: "limit-label", x: x + 3, y: top + 2 }, say(limit === 180 ? "limit_respond" : "limit_onsite")),
      svg("text", { class: "axis", x: left, y: top + height + 30 }, label));
    return chart;
  }

  // Per volunteer: how often alerted, how often they said yes (drills show who answers).
  function volunteerChart(people) {
    const rowH = 20, left = 110, scale = 200 / Math.max(1, ...people.map((p) => p.alerted));
    const chart = svg("svg", { class: "chart volunteers", viewBox: `0 0 ${left + 260} ${people.length * rowH + 24}`, role: "img", "aria-label": say("volunteers") });
    people.forEach((p, i) => {
      const y = 6 + i * rowH;
      chart.append(svg("text", { class: "label", x: left - 6, y: y + 12, "text-anchor": "end" }, p.name || `#${p.volunteer_id}`),
        svg("rect", { class: "bar alerted", x: left, y, width: p.alerted * scale, height: rowH - 6 }),
        svg("rect", { class: "bar accepts", x: left, y, width: p.accepts * scale, height: rowH - 6 }),
        svg("text", { class: "value", x: left + p.alerted * scale + 4, y: y + 12 }, `${p.accepts}/${p.alerted}`));
    });
    chart.append(svg("text", { class: "axis", x: left, y: people.length * rowH + 20 }, `${say("accepts")} / ${say("alerted")}`));
    return chart;
  }

  function groupsOf(doc) {
    const one = (key, label, g) => ({ key, label, respond: g.respond_compliance_pct, onsite: g.onsite_compliance_pct, counted: g.counted, incidents: g.incidents });
    return [one("overall", say("overall"), doc.overall),
      ...Object.entries(doc.by_trigger || {}).map(([k, g]) => one(`trigger:${k}`, HW.label("trigger_", k), g)),
      ...Object.entries(doc.by_team || {}).map(([k, g]) => one(`team:${k}`, k === "no team" ? say("no_team") : k, g))];
  }

  const secs = (v) => (v == null ? "—" : `${Math.round(v)} s`);

  // Draws one report document into `box`; drills and real incidents alike.
  function draw(box, doc, drill) {
    const el = HW.el, o = doc.overall;
    const figures = el("p", { class: "figures" }, `${o.incidents} ${say("incidents")} · ${o.counted} ${say("counted")} · ` +
      `${say("respond")}: ${o.respond_compliance_pct ?? "—"}% (${say("p50")} ${secs(o.respond_p50_s)}, ${say("p90")} ${secs(o.respond_p90_s)}) · ` +
      `${say("onsite")}: ${o.onsite_compliance_pct ?? "—"}% (${say("p50")} ${secs(o.onsite_p50_s)}, ${say("p90")} ${secs(o.onsite_p90_s)})`);
    const rows = doc.rows || [];
    const legend = el("p", { class: "legend" }, el("span", { class: "key respond" }, say("respond")), " ", el("span", { class: "key onsite" }, say("onsite")));
    const parts = [el("h2", {}, say(drill ? "title_drill" : "title_real")), figures];
    if (!o.incidents) parts.push(el("p", { class: "muted" }, say("none")));
    else {
      parts.push(el("h3", {}, say("compliance")), legend, complianceChart(groupsOf(doc)),
        el("h3", {}, say("respond_times")),
        histogram(rows.filter((r) => r.respond_s != null).map((r) => r.respond_s), { limit: 180, step: 30, max: 600, label: say("respond_times") }),
        el("h3", {}, say("onsite_times")),
        histogram(rows.filter((r) => r.onsite_s != null).map((r) => r.onsite_s), { limit: 600, step: 60, max: 1800, label: say("onsite_times") }));
      const people = doc.by_volunteer || [];
      if (people.length) parts.push(el("h3", {}, say("volunteers")), volunteerChart(people));
    }
    box.replaceChildren(...parts);
  }

  const state = { open: false, drill: false, doc: null };

  async function load() {
    const box = document.getElementById("report-body");
    try {
      state.doc = await HW.api(`/api/v1/reports/sla?drill=${state.drill ? "true" : "false"}`);
      draw(box, state.doc, state.drill);
    } catch (e) {
      box.replaceChildren(HW.el("p", { class: "muted" }, say("failed")));
    }
  }

  function labels() {
    document.getElementById("report-toggle").textContent = say(state.open ? "board" : "report");
    document.getElementById("report-real").textContent = say("real");
    document.getElementById("report-drill").textContent = say("drill");
    document.getElementById("report-real").setAttribute("aria-pressed", String(!state.drill));
    document.getElementById("report-drill").setAttribute("aria-pressed", String(state.drill));
  }

  function show(open) {
    state.open = open;
    document.body.classList.toggle("reporting", open);
    document.getElementById("report").classList.toggle("hidden", !open);
    labels();
    if (open) load();
    else window.dispatchEvent(new Event("resize"));  // the map was hidden: let Leaflet re-measure
  }

  function setDrill(drill) { state.drill = drill; labels(); load(); }

  document.getElementById("report-toggle").addEventListener("click", () => show(!state.open));
  document.getElementById("report-real").addEventListener("click", () => setDrill(false));
  document.getElementById("report-drill").addEventListener("click", () => setDrill(true));
  // The console switches the language on this button; redraw after it has.
  document.getElementById("lang").addEventListener("click", () => setTimeout(() => {
    labels();
    if (state.open && state.doc) draw(document.getElementById("report-body"), state.doc, state.drill);
  }, 0));
  labels();
  window.HWReport = { draw, histogram, complianceChart };
})();
