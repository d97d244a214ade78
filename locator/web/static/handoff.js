// The hand-off page's print button (no inline handlers: the page's policy forbids them).
"use strict";
document.getElementById("print").addEventListener("click", () => window.print());
