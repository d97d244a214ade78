// The family portal's privacy card on /family/elders/{id}: who read or changed her data
// (her access log, as text), a copy of everything held about her (the export, as a JSON
// download), and erasing her (after typing her name). family.js calls HWPrivacy.init.
"use strict";

const HWPrivacy = (() => {
  const $ = (id) => document.getElementById(id);
  const SPECIAL = { export: "al_export_action", erased: "al_erased_action" };

  function who(entry, me) {
    if (entry.role === "guardian" && entry.subject === me) return HW.t("al_you");
    const role = HW.t("al_role_" + entry.role);
    return entry.role === "volunteer" && entry.subject ? `${role} #${entry.subject}` : role;
  }

  async function loadLog(elderId, me) {
    const page = await HW.api(`/api/v1/elders/${elderId}/access-log?limit=50`);
    const list = $("access-log");
    list.replaceChildren();
    if (!page.items.length) list.replaceChildren(HW.el("li", { class: "muted" }, HW.t("al_empty")));
    page.items.forEach((e) => {
      const when = new Date(e.at).toLocaleString(HW.getLocale(), { dateStyle: "short", timeStyle: "short" });
      const what = HW.t(SPECIAL[e.action] || "al_" + e.action.replace(".", "_"));
      list.appendChild(HW.el("li", { class: "access", data: { action: e.action, role: e.role } },
        `${when} · `, HW.el("b", {}, who(e, me)), ` · ${what}`, e.detail ? HW.el("span", { class: "muted" }, ` (${e.detail})`) : null));
    });
  }

  async function download(elderId) {
    const res = await HW.api(`/api/v1/elders/${elderId}/export`, { raw: true });
    if (!res.ok) throw new Error(`${res.status}`);
    const url = URL.createObjectURL(await res.blob());
    const a = HW.el("a", { href: url, download: `homeward-elder-${elderId}.json`, class: "hidden" });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // Erasing cannot be undone: the button stays disabled until her name is typed exactly.
  function askErase(elderId, elder, say, fail) {
    const box = $("erase-confirm"), input = $("erase-name"), yes = $("erase-yes");
    $("erase-text").textContent = HW.fmt("al_erase_type", { name: elder.name });
    input.value = "";
    yes.disabled = true;
    box.classList.remove("hidden");
    input.focus();
    input.oninput = () => { yes.disabled = input.value.trim() !== elder.name; };
    $("erase-no").onclick = () => { box.classList.add("hidden"); say(HW.t("al_erase_kept"), "ok"); };
    yes.onclick = async () => {
      if (input.value.trim() !== elder.name) return;
      try {
        await HW.api(`/api/v1/elders/${elderId}`, { method: "DELETE" });
        sessionStorage.setItem("hw.flash", HW.t("al_erased"));
        location.href = "/family";
      } catch (e) { fail(e); }
    };
  }

  async function init(elderId, elder, say, fail) {
    let me = null;
    try { me = (await HW.whoami()).subject; } catch (e) { me = null; }
    $("export").onclick = async () => {
      try { await download(elderId); say(HW.t("al_exported"), "ok"); await loadLog(elderId, me); } catch (e) { fail(e); }
    };
    $("erase").onclick = () => askErase(elderId, elder, say, fail);
    await loadLog(elderId, me);
  }

  return { init };
})();
