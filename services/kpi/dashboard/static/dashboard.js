// Leadflow KPI dashboard: reads /v1/kpi/* with the caller's token and draws it with Chart.js.
// No build step: this file and the vendored chart.umd.min.js are served as they are.
"use strict";

(function () {
  const TOKEN_KEY = "leadflow.kpi.token";
  const REFRESH_MS = 60000;
  const devMode = document.documentElement.dataset.devMode === "true";
  const form = document.getElementById("period");
  const statusLine = document.getElementById("status");
  const charts = {};
  let refreshTimer = null;

  class AuthError extends Error {}

  // The token: from ?token= once (then dropped from the address bar), else this tab's store.
  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const given = url.searchParams.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search);
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || (devMode ? "dev" : null);
  }

  function askForToken(message) {
    const auth = document.getElementById("auth");
    document.getElementById("auth-message").textContent = message;
    const field = auth.querySelector("input[name=token]");
    if (devMode && !field.value) field.value = "dev";
    auth.hidden = false;
    document.body.dataset.state = "needs-token";
  }

  // Calendar dates as YYYY-MM-DD strings; arithmetic in UTC so the browser's zone never shifts them.
  function parseDate(text) {
    const [y, m, d] = text.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d));
  }
  function formatDate(date) {
    return date.toISOString().slice(0, 10);
  }
  function addMonths(text, months) {
    const d = parseDate(text);
    return formatDate(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + months, 1)));
  }
  function addDays(text, days) {
    const d = parseDate(text);
    d.setUTCDate(d.getUTCDate() + days);
    return formatDate(d);
  }
  function monthStart(text) {
    return text.slice(0, 8) + "01";
  }
  function todayIn(tz) {
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: tz }).format(new Date());
    } catch (e) {
      return formatDate(new Date());
    }
  }

  function preset(name, tz) {
    const today = todayIn(tz);
    const thisMonth = monthStart(today);
    switch (name) {
      case "this-month": return [thisMonth, addMonths(thisMonth, 1)];
      case "last-month": return [addMonths(thisMonth, -1), thisMonth];
      case "last-3-months": return [addMonths(thisMonth, -3), thisMonth];
      case "this-year": return [today.slice(0, 4) + "-01-01", addMonths(thisMonth, 1)];
      case "last-12-months": return [addMonths(thisMonth, -12), thisMonth];
      default: return null;
    }
  }

  function readState() {
    const data = new FormData(form);
    const state = {};
    for (const key of ["from", "to", "tz", "source", "channel", "campaign"]) {
      const value = String(data.get(key) || "").trim();
      if (value) state[key] = value;
    }
    return state;
  }

  function writeState(state) {
    for (const [key, value] of Object.entries(state)) {
      const field = form.elements.namedItem(key);
      if (field) field.value = value;
    }
  }

  function initialState() {
    const url = new URL(window.location.href);
    const tz = url.searchParams.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const [from, to] = preset("this-month", tz);
    const state = { from, to, tz };
    for (const key of ["from", "to", "source", "channel", "campaign"]) {
      const value = url.searchParams.get(key);
      if (value) state[key] = value;
    }
    return state;
  }

  async function api(path, params) {
    const current = token();
    if (!current) throw new AuthError("Enter a token with the scope kpi:read.");
    const query = new URLSearchParams(params);
    const response = await fetch(path + "?" + query.toString(), {
      headers: { Authorization: "Bearer " + current, Accept: "application/json" },
    });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(response.status === 401
        ? "The token was refused: enter a valid one."
        : "The token lacks the scope kpi:read.");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = (body.detail || []).map((d) => (d.loc || []).slice(-1)[0] + ": " + d.msg).join("; ") || detail;
      } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return response.json();
  }

  // Formatting
  const counts = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 0, maximumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return seconds.toFixed(0) + " s";
    if (seconds < 5400) return (seconds / 60).toFixed(0) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function show(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "seconds") return typeof value === "object" ? duration(value.median) : duration(value);
    if (unit === "ratio") return percent.format(value);
    if (unit === "money") return money.format(value);
    return counts.format(value);
  }

  // Lower is better for these: a rise is shown in red.
  const LOWER_IS_BETTER = new Set([
    "first_response_time", "proposal_time", "contract_time", "lead_lifetime",
    "cost_per_lead", "cost_per_sal", "spend", "rejected", "sales_rejected", "deals_lost",
  ]);

  function deltaSpan(name, pct, label) {
    const span = document.createElement("span");
    const value = pct && typeof pct === "object" ? pct.median : pct;
    if (value === null || value === undefined) {
      span.textContent = label + " –";
      return span;
    }
    const better = LOWER_IS_BETTER.has(name) ? value < 0 : value > 0;
    span.className = value === 0 ? "" : better ? "up" : "down";
    span.textContent = label + " " + (value > 0 ? "▲" : value < 0 ? "▼" : "") + Math.abs(value).toFixed(1) + "%";
    return span;
  }

  const TILES = [
    "leads_received", "leads_contacted", "sal", "deals_won", "revenue", "plan_fulfilment",
    "win_rate", "lead_quality_rate", "average_check", "ltv", "spend", "roi", "cost_per_lead",
    "first_response_time",
  ];

  function renderTiles(summary) {
    const box = document.getElementById("tiles");
    box.replaceChildren();
    for (const name of TILES) {
      const m = summary.metrics[name];
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.metric = name;
      tile.dataset.value = JSON.stringify(m.value);
      const title = document.createElement("div");
      title.className = "name";
      title.textContent = name.replaceAll("_", " ") + (name === "first_response_time" ? " (median)" : "");
      const value = document.createElement("div");
      value.className = "value";
      value.textContent = show(m.value, m.unit);
      const deltas = document.createElement("div");
      deltas.className = "deltas";
      deltas.append(deltaSpan(name, m.delta_previous_pct, "prev"), deltaSpan(name, m.delta_year_ago_pct, "yoy"));
      tile.append(title, value, deltas);
      box.append(tile);
    }
  }

  function renderTable(summary) {
    const body = document.querySelector("#metrics tbody");
    body.replaceChildren();
    for (const [name, m] of Object.entries(summary.metrics)) {
      const row = document.createElement("tr");
      row.dataset.metric = name;
      const cells = [
        name, show(m.value, m.unit), show(m.previous, m.unit), null, show(m.year_ago, m.unit), null,
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        if (i === 0) td.className = "metric";
        if (i === 3) td.append(deltaSpan(name, m.delta_previous_pct, ""));
        else if (i === 5) td.append(deltaSpan(name, m.delta_year_ago_pct, ""));
        else td.textContent = text;
        row.append(td);
      });
      body.append(row);
    }
  }

  const COLORS = ["#2f6fed", "#9aa7c2", "#f29d38", "#1a8f5a", "#c2413a", "#7b5cd6"];

  function draw(name, config) {
    const figure = document.querySelector('[data-chart="' + name + '"]');
    const canvas = figure.querySelector("canvas");
    if (charts[name]) charts[name].destroy();
    config.options = Object.assign(
      { responsive: true, maintainAspectRatio: false, animation: false },
      config.options || {},
    );
    charts[name] = new Chart(canvas, config);
    // What was drawn, for people with screen readers and for the end-to-end test.
    figure.dataset.labels = JSON.stringify(config.data.labels);
    figure.dataset.values = JSON.stringify(config.data.datasets.map((d) => d.data));
    figure.dataset.rendered = "true";
  }

  function renderFunnel(funnel) {
    const stages = funnel.stages;
    draw("funnel", {
      type: "bar",
      data: {
        labels: stages.map((s) => s.stage.replaceAll("_", " ") +
          (s.step_conversion === null ? "" : " · " + percent.format(s.step_conversion))),
        datasets: [{ label: "leads", data: stages.map((s) => s.count), backgroundColor: COLORS[0] }],
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } } },
    });
  }

  function seriesOf(timeseries, metric) {
    return timeseries.points.filter((p) => p.metric === metric && p.group === null);
  }

  function renderLeads(now, yearAgo) {
    const current = seriesOf(now, "leads_received");
    const before = seriesOf(yearAgo, "leads_received");
    draw("leads-by-month", {
      type: "line",
      data: {
        labels: current.map((p) => p.label),
        datasets: [
          { label: "leads received", data: current.map((p) => p.value), borderColor: COLORS[0],
            backgroundColor: COLORS[0], tension: 0.2 },
          { label: "a year earlier", data: before.map((p) => p.value), borderColor: COLORS[1],
            backgroundColor: COLORS[1], borderDash: [6, 4], tension: 0.2 },
        ],
      },
      options: { scales: { y: { beginAtZero: true } } },
    });
  }

  function renderConversion(summary) {
    const names = ["brief_rate", "lead_quality_rate", "win_rate"];
    const pick = (key) => names.map((n) => summary.metrics[n][key]);
    draw("conversion", {
      type: "bar",
      data: {
        labels: names.map((n) => n.replaceAll("_", " ")),
        datasets: [
          { label: "this period", data: pick("value"), backgroundColor: COLORS[0] },
          { label: "previous", data: pick("previous"), backgroundColor: COLORS[1] },
          { label: "a year ago", data: pick("year_ago"), backgroundColor: COLORS[2] },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, ticks: { callback: (v) => percent.format(v) } } },
        plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + percent.format(c.raw) } } },
      },
    });
  }

  function renderSpeed(summary) {
    const names = ["first_response_time", "proposal_time", "contract_time", "lead_lifetime"];
    const hours = (key, part) => names.map((n) => {
      const v = summary.metrics[n][key];
      return v && v[part] !== null ? Math.round((v[part] / 3600) * 100) / 100 : null;
    });
    draw("speed", {
      type: "bar",
      data: {
        labels: names.map((n) => n.replaceAll("_", " ")),
        datasets: [
          { label: "median", data: hours("value", "median"), backgroundColor: COLORS[0] },
          { label: "p90", data: hours("value", "p90"), backgroundColor: COLORS[2] },
          { label: "median, previous", data: hours("previous", "median"), backgroundColor: COLORS[1] },
        ],
      },
      options: {
        // Log scale: a first response takes hours, a lead's lifetime weeks.
        scales: { y: { type: "logarithmic", title: { display: true, text: "hours (log scale)" } } },
        plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + duration(c.raw * 3600) } } },
      },
    });
  }

  function renderRevenue(timeseries) {
    const revenue = seriesOf(timeseries, "revenue");
    const plan = seriesOf(timeseries, "plan");
    const datasets = [
      { type: "bar", label: "revenue", data: revenue.map((p) => p.value), backgroundColor: COLORS[3] },
    ];
    if (plan.some((p) => p.value !== null)) {
      datasets.push({ type: "line", label: "plan", data: plan.map((p) => p.value),
        borderColor: COLORS[4], backgroundColor: COLORS[4], stepped: "middle" });
    }
    draw("revenue-plan", {
      type: "bar",
      data: { labels: revenue.map((p) => p.label), datasets },
      options: { scales: { y: { beginAtZero: true } } },
    });
  }

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.className = "status" + (isError ? " error" : "");
  }

  async function load() {
    const state = readState();
    if (!state.from || !state.to) return;
    const url = new URL(window.location.href);
    url.search = new URLSearchParams(state).toString();
    window.history.replaceState(null, "", url.pathname + url.search);
    document.body.dataset.state = "loading";
    setStatus("Loading…");
    const filters = {};
    for (const key of ["tz", "source", "channel", "campaign"]) if (state[key]) filters[key] = state[key];
    // The trend charts show the 12 months that end with the period's last month.
    const lastMonth = monthStart(addDays(state.to, -1));
    const trend = { from: addMonths(lastMonth, -11), to: addMonths(lastMonth, 1) };
    const trendAgo = { from: addMonths(trend.from, -12), to: addMonths(trend.to, -12) };
    try {
      const [summary, funnel, leadsNow, leadsAgo, revenue] = await Promise.all([
        api("/v1/kpi/summary", { from: state.from, to: state.to, ...filters }),
        api("/v1/kpi/funnel", { from: state.from, to: state.to, ...filters }),
        api("/v1/kpi/timeseries", { metric: "leads_received", grain: "month", ...trend, ...filters }),
        api("/v1/kpi/timeseries", { metric: "leads_received", grain: "month", ...trendAgo, ...filters }),
        api("/v1/kpi/timeseries", { metric: "revenue,plan", grain: "month", ...trend, ...filters }),
      ]);
      document.getElementById("auth").hidden = true;
      renderTiles(summary);
      renderTable(summary);
      renderFunnel(funnel);
      renderLeads(leadsNow, leadsAgo);
      renderConversion(summary);
      renderSpeed(summary);
      renderRevenue(revenue);
      document.body.dataset.state = "ready";
      setStatus("Updated " + new Date().toLocaleTimeString() + " · " + summary.from + " → " +
        summary.to + " (" + summary.tz + ")" + (summary.currency ? " · money in " + summary.currency : ""));
    } catch (error) {
      if (error instanceof AuthError) {
        askForToken(error.message);
        setStatus(error.message, true);
      } else {
        document.body.dataset.state = "error";
        setStatus("Could not load: " + error.message, true);
      }
    }
  }

  function schedule() {
    if (refreshTimer) clearInterval(refreshTimer);
    // Polling is cheap: the API answers 304 to the browser's If-None-Match while nothing changed.
    refreshTimer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
  }

  function start() {
    takeTokenFromUrl();
    writeState(initialState());
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
    for (const button of form.querySelectorAll("[data-preset]")) {
      button.addEventListener("click", () => {
        const range = preset(button.dataset.preset, readState().tz || "UTC");
        writeState({ from: range[0], to: range[1] });
        load();
      });
    }
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = new FormData(e.target).get("token");
      if (value) sessionStorage.setItem(TOKEN_KEY, String(value));
      load();
    });
    if (!token()) {
      askForToken("This dashboard reads the KPI API: enter a token with the scope kpi:read.");
      return;
    }
    load();
    schedule();
  }

  start();
})();
