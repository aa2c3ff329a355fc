// The tokens page: create (shown once), revoke; both documented REST calls.
"use strict";

(() => {
  function addRow(token) {
    const body = document.querySelector("table.tokens tbody");
    body.querySelector("td.muted")?.closest("tr").remove();
    const row = document.createElement("tr");
    row.dataset.tokenId = token.id;
    const day = (iso) => (iso ? iso.slice(0, 10) : "never");
    const cells = [token.name, `${token.prefix}…`, token.created_at.slice(0, 16).replace("T", " "), "never", day(token.expires_at)];
    for (const text of cells) row.appendChild(document.createElement("td")).textContent = text;
    const revoke = row.appendChild(document.createElement("td")).appendChild(document.createElement("button"));
    revoke.className = "link";
    revoke.dataset.tokenRevoke = "";
    revoke.textContent = "revoke";
    body.appendChild(row);
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("[data-token-create]");
    if (!form) return;
    event.preventDefault();
    const body = { name: form.elements.name.value };
    const days = form.elements.expires_in_days.value;
    if (days) body.expires_in_days = Number(days);
    try {
      const made = await winnow.api("POST", "/api/users/me/tokens", body);
      const box = document.getElementById("new-token");
      box.querySelector("code").textContent = made.token;
      box.hidden = false;
      addRow(made);
      winnow.flash(`Token "${made.name}" created.`);
    } catch (error) { winnow.flash(error.message, "error"); }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-token-revoke]");
    if (!button) return;
    const row = button.closest("tr");
    try {
      await winnow.api("DELETE", `/api/users/me/tokens/${row.dataset.tokenId}`);
      row.remove();
      winnow.flash("Token revoked.");
    } catch (error) { winnow.flash(error.message, "error"); }
  });
})();
