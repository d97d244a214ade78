// Web push for the volunteer page: show the alert, open its page when tapped.
"use strict";
self.addEventListener("push", (event) => {
  let data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { body: event.data && event.data.text() }; }
  event.waitUntil(self.registration.showNotification(data.title || "爱回家 Homeward", {
    body: data.body || "", data: { url: data.link || (data.incident_id ? "/v/" + data.incident_id : "/v") },
    requireInteraction: true, tag: data.incident_id ? "incident-" + data.incident_id : undefined,
  }));
});
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow(event.notification.data.url));
});
