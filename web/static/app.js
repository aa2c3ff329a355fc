// Winnow's pages act through the REST API only: every button here is a documented call.
"use strict";

const winnow = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  async function api(method, url, body) {
    const options = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
    if (body instanceof FormData) {
      options.body = body;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!response.ok) {
      const detail = data && data.detail !== undefined ? data.detail : data;
      const error = new Error(typeof detail === "string" ? detail : (detail && detail.message) || JSON.stringify(detail));
      error.status = response.status;
      error.detail = detail;
      throw error;
    }
    return data;
  }

  function flash(message, kind = "info") {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = `flash ${kind}`;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { box.textContent = ""; box.className = ""; }, 6000);
  }

  function parseClasses(text) {
    // "grizzly: grizzly bear -arctos; brown bear" -> {name, queries}
    return text.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
      const [name, rest = ""] = line.split(/:(.*)/s);
      const queries = rest.split(";").map((q) => q.trim()).filter(Boolean);
      return { name: name.trim(), queries };
    });
  }

  function formParams(form) {
    const params = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "checkbox") params[el.name] = el.checked;
      else if (el.value === "") continue;
      // How a value travels comes from the params model (web/forms.py): data-send.
      else if (el.dataset.send === "number" || el.type === "number") params[el.name] = Number(el.value);
      else if (el.dataset.send === "list") params[el.name] = [el.value];
      else params[el.name] = el.value;
    }
    return params;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const d = form.dataset;
    if (!("newProject" in d || "addClass" in d || "upload" in d || "job" in d)) return;
    event.preventDefault();
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    try {
      if ("newProject" in d) {
        const project = await api("POST", "/api/projects", {
          name: form.elements.name.value,
          classes: parseClasses(form.elements.classes.value),
        });
        location.href = `/projects/${project.id}`;
      } else if ("addClass" in d) {
        const queries = form.elements.queries.value.split(";").map((q) => q.trim()).filter(Boolean);
        await api("POST", `/api/projects/${d.addClass}/classes`, { name: form.elements.name.value, queries });
        location.reload();
      } else if ("upload" in d) {
        const body = new FormData();
        for (const el of form.elements) {
          if (el.type === "file") for (const f of el.files) body.append(d.field, f);
          else if (el.name) body.append(el.name, el.value);
        }
        const result = await api("POST", d.upload, body);
        if (result && result.kind) flash(`Job ${result.id} (${result.kind}) queued; images are verified as they arrive.`);
        else {
          const verifying = result.verify_job_id ? `; verifying them (job ${result.verify_job_id})` : "";
          flash(`Added ${result.added}, duplicates ${result.duplicates}${verifying}.`);
        }
        form.reset();
        document.body.dispatchEvent(new Event("winnow:job"));
      } else if ("job" in d) {
        const job = await api("POST", `/api/projects/${d.job}/jobs`, { kind: d.kind, params: formParams(form) });
        flash(`Job ${job.id} (${job.kind}) queued.`);
        document.body.dispatchEvent(new Event("winnow:job"));
      }
    } catch (error) {
      flash(error.message, "error");
    } finally {
      if (button) button.disabled = false;
    }
  });

  document.addEventListener("click", async (event) => {
    const el = event.target;
    if (el.matches("[data-logout]")) {
      await api("POST", "/api/auth/logout");
      location.href = "/login";
    } else if (el.matches("[data-cancel]")) {
      try {
        await api("POST", el.dataset.cancel);
        document.body.dispatchEvent(new Event("winnow:job"));
      } catch (error) { flash(error.message, "error"); }
    }
  });

  return { api, flash };
})();
