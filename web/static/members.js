// The members page: every action is a documented REST call (PUT/DELETE .../members).
"use strict";

(() => {
  const table = document.querySelector("table.members");
  if (!table) return;
  const base = `/api/projects/${table.dataset.project}/members`;
  const done = (message) => { winnow.flash(message); setTimeout(() => location.reload(), 400); };

  document.addEventListener("change", async (event) => {
    const select = event.target.closest("[data-member-role]");
    if (!select) return;
    const username = select.closest("tr").dataset.username;
    try {
      await winnow.api("PUT", base, { username, role: select.value });
      done(`${username} is now ${select.value}.`);
    } catch (error) { winnow.flash(error.message, "error"); }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-member-remove]");
    if (!button) return;
    const username = button.closest("tr").dataset.username;
    try {
      await winnow.api("DELETE", `${base}/${encodeURIComponent(username)}`);
      done(`${username} removed.`);
    } catch (error) { winnow.flash(error.message, "error"); }
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("[data-member-invite]");
    if (!form) return;
    event.preventDefault();
    const body = { username: form.elements.username.value.trim(), role: form.elements.role.value };
    try {
      await winnow.api("PUT", base, body);
      done(`${body.username} added as ${body.role}.`);
    } catch (error) { winnow.flash(error.message, "error"); }
  });
})();
