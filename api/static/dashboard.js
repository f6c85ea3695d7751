// nightowl dashboard: live progress by polling small JSON endpoints. No framework, no network
// access beyond this server. Text goes in through textContent only (results are user data).
"use strict";

const nightowl = (() => {
  const loginUrl = () =>
    "/ui/login?refused=1&next=" + encodeURIComponent(location.pathname + location.search);

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin",
                                        headers: { Accept: "application/json" } });
    if (response.status === 401) {
      location.href = loginUrl();
      return null;
    }
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.json();
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function setBar(bar, job) {
    if (!bar) return;
    bar.dataset.done = job.done;
    bar.dataset.total = job.total;
    bar.setAttribute("aria-valuenow", job.percent);
    const fill = bar.querySelector(".fill");
    fill.style.width = job.percent + "%";
    fill.className = "fill status-" + job.status;
    fill.querySelector(".ok").style.width = job.ok_percent + "%";
  }

  function newBar() {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "progressbar");
    const fill = document.createElement("div");
    fill.className = "fill";
    const ok = document.createElement("div");
    ok.className = "ok";
    fill.appendChild(ok);
    bar.appendChild(fill);
    return bar;
  }

  function jobRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const link = document.createElement("a");
    link.href = "/ui/jobs/" + encodeURIComponent(job.id);
    link.textContent = job.id;
    const first = document.createElement("td");
    first.appendChild(link);
    const barCell = document.createElement("td");
    barCell.appendChild(newBar());
    tr.append(first, cell(job.kind), cell(job.version || job.model), cell("", "status"),
              barCell, cell("", "done"), cell("", "failed"), cell(job.created_at));
    tr.children[2].title = "asked for " + job.model;
    return tr;
  }

  function updateRow(tr, job) {
    tr.querySelector(".status").textContent = job.status;
    tr.querySelector(".done").textContent = job.counts;
    tr.querySelector(".failed").textContent = job.failed;
    setBar(tr.querySelector(".bar"), job);
  }

  // Repeats `step` every `ms` until it returns false; a failed poll is retried, not fatal.
  function every(ms, step) {
    const tick = async () => {
      let again = true;
      try {
        again = await step();
      } catch (err) {
        console.warn("nightowl: poll failed, retrying:", err.message);
      }
      if (again !== false) setTimeout(tick, ms);
    };
    setTimeout(tick, ms);
  }

  function pollJobs(table) {
    const tbody = table.tBodies[0];
    every(1000, async () => {
      const jobs = await getJSON(table.dataset.poll);
      if (!jobs) return false;
      const rows = new Map([...tbody.querySelectorAll("tr[data-job]")].map((tr) => [tr.dataset.job, tr]));
      const ordered = jobs.map((job) => {
        const tr = rows.get(job.id) || jobRow(job);
        updateRow(tr, job);
        return tr;
      });
      if (ordered.length) tbody.replaceChildren(...ordered);
      return true;
    });
  }

  function pollJob(section) {
    if (section.dataset.terminal === "true") return;
    every(1000, async () => {
      const job = await getJSON(section.dataset.poll);
      if (!job) return false;
      document.getElementById("job-status").textContent = job.status;
      document.getElementById("job-done").textContent = job.counts;
      setBar(document.getElementById("job-progress"), job);
      if (job.terminal) {
        // The numbers and the results table are server-rendered: show the final ones once.
        setTimeout(() => location.reload(), 500);
        return false;
      }
      return true;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const jobs = document.getElementById("jobs");
    if (jobs && jobs.dataset.poll) pollJobs(jobs);
    const job = document.getElementById("job");
    if (job && job.dataset.poll) pollJob(job);
  });

  return { getJSON, every };
})();
