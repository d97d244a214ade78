// Login: a pasted token (or one carried in a demo link's #token=…) becomes a session cookie.
HW.applyI18n();
document.getElementById("lang").onclick = () => { HW.setLocale(HW.getLocale() === "en" ? "zh-CN" : "en"); HW.applyI18n(); };
document.getElementById("form").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const who = await HW.api("/api/v1/session", { method: "POST", body: { token: document.getElementById("token").value.trim() } });
    const next = new URLSearchParams(location.search).get("next");
    const home = { admin: "/console", dispatcher: "/console", guardian: "/family", volunteer: "/v" }[who.role];
    // Only somewhere on this site: let the browser parse it ("//host", "/\t/host"…), then
    // compare origins.
    let target = home;
    if (next) {
      try {
        const u = new URL(next, location.origin);
        if (u.origin === location.origin) target = u.pathname + u.search + u.hash;
      } catch (e) { /* not a URL: go home */ }
    }
    location.href = target;
  } catch (err) { document.getElementById("error").textContent = err.message; }
};
// A link such as /login#token=… (the demo prints them) logs in at once. The fragment is
// never sent to a server; drop it from the address bar and history before anything else.
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  history.replaceState(null, "", location.pathname + location.search);
  document.getElementById("token").value = fromLink;
  document.getElementById("form").requestSubmit();
}
