// The users page (admins): every action is a documented REST call (POST /api/users,
// PATCH /api/users/{id}).
"use strict";

(() => {
  const table = document.querySelector("table.users");
  if (!table) return;
  const done = (message) => { winnow.flash(message); setTimeout(() => location.reload(), 400); };
  const row = (el) => el.closest("tr");
  const patch = (tr, body) => winnow.api("PATCH", `/api/users/${tr.dataset.userId}`, body);

  document.addEventListener("change", async (event) => {
    const box = event.target.closest("[data-user-admin]");
    if (!box) return;
    const tr = row(box);
    try {
      await patch(tr, { is_admin: box.checked });
      done(`${tr.dataset.username} is ${box.checked ? "now" : "no longer"} an admin.`);
    } catch (error) {
      box.checked = !box.checked;
      winnow.flash(error.message, "error");
    }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-user-active]");
    if (!button) return;
    const tr = row(button);
    const active = button.dataset.userActive === "true";
    try {
      await patch(tr, { is_active: active });
      done(`${tr.dataset.username} ${active ? "enabled" : "disabled"}.`);
    } catch (error) { winnow.flash(error.message, "error"); }
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.matches("[data-user-password]")) {
      event.preventDefault();
      const tr = row(form);
      try {
        await patch(tr, { password: form.elements.password.value });
        form.reset();
        winnow.flash(`New password set for ${tr.dataset.username}; their sessions ended.`);
      } catch (error) { winnow.flash(error.message, "error"); }
    } else if (form.matches("[data-user-create]")) {
      event.preventDefault();
      const body = {
        username: form.elements.username.value.trim(),
        password: form.elements.password.value,
        is_admin: form.elements.is_admin.checked,
      };
      try {
        await winnow.api("POST", "/api/users", body);
        done(`User ${body.username} created.`);
      } catch (error) { winnow.flash(error.message, "error"); }
    }
  });
})();
