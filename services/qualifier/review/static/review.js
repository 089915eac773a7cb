// Leadflow definition review: reads /v1/definitions/{v}/review with the reader's token and
// draws it as SVG charts and tables. No build step, no library: served as it is.
"use strict";

(function () {
  const TOKEN_KEY = "leadflow.review.token";
  const SVG = "http://www.w3.org/2000/svg";
  const devMode = document.documentElement.dataset.devMode === "true";
  const form = document.getElementById("pick");
  const statusLine = document.getElementById("status");
  let current = null; // the review on screen

  class AuthError extends Error {}

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
    auth.hidden = false;
    document.body.dataset.state = "needs-token";
  }

  async function call(path, options = {}, bearer = token()) {
    const headers = Object.assign({ Authorization: "Bearer " + bearer }, options.headers || {});
    const r = await fetch(path, Object.assign({}, options, { headers }));
    if (r.status === 401 || r.status === 403) {
      throw new AuthError("The token was refused (" + r.status + "): enter one with the scope it needs.");
    }
    if (!r.ok) {
      let detail = r.statusText;
      try {
        const body = await r.json();
        detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
      } catch (e) { /* not JSON */ }
      const error = new Error(detail || "HTTP " + r.status);
      error.status = r.status;
      throw error;
    }
    return r;
  }

  // ---- formatting
  const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%");
  const money = (text) => Number(text).toLocaleString("en-US", { maximumFractionDigits: 0 });
  function interval(rate) {
    if (rate.value === null) return "–";
    return pct(rate.value) + " (" + pct(rate.low) + "–" + pct(rate.high) + ")";
  }
  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function row(cells) {
    const tr = el("tr");
    for (const [text, cls] of cells) tr.appendChild(el("td", cls ? { class: cls } : {}, String(text)));
    return tr;
  }
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function clip(text, n) {
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  // ---- charts
  function drawQuality(review) {
    const items = review.criteria.filter((c) => c.outcomes.lead_quality_rate.denominator > 0);
    const baseline = review.all.lead_quality_rate.value;
    const width = 1100, left = 380, right = 150, barH = 18, gap = 8, top = 8;
    const height = top + items.length * (barH + gap) + 24;
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    const x = (v) => left + v * (width - left - right);
    items.forEach((c, i) => {
      const rate = c.outcomes.lead_quality_rate;
      const y = top + i * (barH + gap);
      const better = rate.low > baseline, worse = rate.high < baseline;
      svg.appendChild(svgEl("text", { x: left - 8, y: y + 13, "text-anchor": "end" }, clip(c.label, 52)));
      svg.appendChild(svgEl("rect", {
        class: "bar" + (better ? " high" : worse ? " low" : ""),
        x: left, y, width: Math.max(1, x(rate.value) - left), height: barH,
      }));
      svg.appendChild(svgEl("line", { class: "whisker", x1: x(rate.low), x2: x(rate.high), y1: y + barH / 2, y2: y + barH / 2 }));
      for (const v of [rate.low, rate.high]) {
        svg.appendChild(svgEl("line", { class: "whisker", x1: x(v), x2: x(v), y1: y + 4, y2: y + barH - 4 }));
      }
      const lift = rate.lift === null ? "" : "  ×" + rate.lift.toFixed(2);
      svg.appendChild(svgEl("text", { x: width - right + 8, y: y + 13, class: "muted" },
        pct(rate.value) + " of " + rate.denominator + lift));
    });
    if (baseline !== null) {
      svg.appendChild(svgEl("line", { class: "baseline", x1: x(baseline), x2: x(baseline), y1: 0, y2: height - 20 }));
      svg.appendChild(svgEl("text", { x: x(baseline), y: height - 6, "text-anchor": "middle", class: "muted" },
        "all leads " + pct(baseline)));
    }
    return { svg, drawn: items.map((c) => [c.key, c.outcomes.lead_quality_rate.value]) };
  }

  function drawBars(pairs) {
    const width = 540, left = 200, barH = 20, gap = 8;
    const height = Math.max(40, pairs.length * (barH + gap) + 8);
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    const max = Math.max(1, ...pairs.map(([, v]) => v));
    pairs.forEach(([label, v], i) => {
      const y = 4 + i * (barH + gap);
      svg.appendChild(svgEl("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, clip(label, 30)));
      svg.appendChild(svgEl("rect", { class: "bar", x: left, y, width: Math.max(1, (v / max) * (width - left - 50)), height: barH }));
      svg.appendChild(svgEl("text", { x: left + (v / max) * (width - left - 50) + 6, y: y + 14, class: "muted" }, String(v)));
    });
    if (!pairs.length) svg.appendChild(svgEl("text", { x: 10, y: 24, class: "muted" }, "no rejections"));
    return { svg, drawn: pairs };
  }

  function drawVersions(versions) {
    const names = [["brief_rate", "brief"], ["lead_quality_rate", "lead quality"], ["win_rate", "win"]];
    const width = 540, height = 220, bottom = 40, top = 10, left = 60;
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    const groupW = (width - left) / Math.max(1, versions.length);
    const barW = Math.min(40, (groupW - 20) / 3);
    const y = (v) => top + (1 - v) * (height - top - bottom);
    for (const t of [0, 0.5, 1]) {
      svg.appendChild(svgEl("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", class: "muted" }, pct(t)));
    }
    versions.forEach((v, g) => {
      const x0 = left + g * groupW + (groupW - 3 * barW) / 2;
      names.forEach(([key], s) => {
        const value = v[key].value || 0;
        svg.appendChild(svgEl("rect", { class: "s" + s, x: x0 + s * barW, y: y(value), width: barW - 4, height: y(0) - y(value) }));
      });
      svg.appendChild(svgEl("text", { x: x0 + 1.5 * barW, y: height - bottom + 16, "text-anchor": "middle" },
        "v" + v.version + " (" + v.leads + " leads)"));
    });
    names.forEach(([, label], s) => {
      svg.appendChild(svgEl("rect", { class: "s" + s, x: left + s * 120, y: height - 14, width: 10, height: 10 }));
      svg.appendChild(svgEl("text", { x: left + s * 120 + 14, y: height - 5, class: "muted" }, label));
    });
    return { svg, drawn: versions.map((v) => names.map(([key]) => v[key].value)) };
  }

  function place(name, chart) {
    const fig = document.querySelector(`figure[data-chart="${name}"]`);
    const box = fig.querySelector(".chart");
    box.replaceChildren(chart.svg);
    fig.dataset.drawn = JSON.stringify(chart.drawn);
    fig.dataset.rendered = "true";
  }

  // ---- tables
  function render(review) {
    current = review;
    const all = review.all;
    document.getElementById("summary").textContent =
      `Version ${review.version}: ${review.leads} leads received from ${review.from.slice(0, 10)} to ` +
      `${review.to.slice(0, 10)} that it took in.`;
    const tiles = [
      ["leads", all.touched, "leads of the version"],
      ["sent_to_sales", all.sent_to_sales, "sent to sales"],
      ["sal", all.sal, "accepted by sales (SAL)"],
      ["lead_quality_rate", pct(all.lead_quality_rate.value), "lead quality " + interval(all.lead_quality_rate).replace(/^[^(]*/, "")],
      ["won", all.won, "won, " + pct(all.win_rate.value) + " win rate"],
      ["revenue", money(all.revenue), "revenue, " + review.currency],
    ];
    document.getElementById("tiles").replaceChildren(...tiles.map(([key, value, label]) => {
      const tile = el("div", { class: "tile", "data-metric": key });
      tile.append(el("b", {}, String(value)), el("small", {}, label));
      return tile;
    }));
    place("quality", drawQuality(review));
    place("reasons", drawBars(Object.entries(all.rejection_reasons)));
    place("versions", drawVersions(review.versions));

    const body = document.querySelector("#criteria tbody");
    const rows = [];
    let kind = null;
    for (const c of review.criteria) {
      if (c.kind !== kind) {
        kind = c.kind;
        const group = el("tr", { class: "group" });
        group.appendChild(el("td", { colspan: "13" }, { reject: "Reject rules", required: "Required information",
          score: "Score rules", threshold: "Thresholds", team: "Sales teams" }[kind]));
        rows.push(group);
      }
      const o = c.outcomes, lift = o.lead_quality_rate.lift;
      const tr = row([
        [c.label], [c.points === null ? "" : c.points, "num"], [o.touched, "num"], [o.sent_to_sales, "num"],
        [o.sal, "num"], [o.rejected_by_sales, "num"], [o.sql, "num"], [o.won, "num"], [o.lost, "num"],
        [money(o.revenue), "num"], [interval(o.lead_quality_rate), "num"],
        [lift === null ? "–" : "×" + lift.toFixed(2), "num"], [pct(o.win_rate.value), "num"],
      ]);
      tr.dataset.key = c.key;
      if (lift !== null && o.lead_quality_rate.low > all.lead_quality_rate.value) tr.children[11].className = "num lift-up";
      if (lift !== null && o.lead_quality_rate.high < all.lead_quality_rate.value) tr.children[11].className = "num lift-down";
      rows.push(tr);
    }
    body.replaceChildren(...rows);

    document.getElementById("rejected-total").textContent =
      `${review.rejected_by_sales.length} of ${review.rejected_by_sales_total}, highest score first`;
    document.querySelector("#rejected tbody").replaceChildren(...review.rejected_by_sales.map((e) =>
      row([[e.lead_id, "id"], [e.team || "–"], [e.score, "num"], [e.criteria.join("; "), "small"], [e.reasons.join("; ") || "–"]])));
    document.getElementById("came-back-total").textContent =
      `${review.came_back.length} of ${review.came_back_total}`;
    document.querySelector("#came-back tbody").replaceChildren(...review.came_back.map((e) =>
      row([[e.lead_id, "id"], [e.kept_as], [e.kept_because], ["v" + e.later_version, "num"], [e.outcome], [money(e.revenue), "num"]])));
    document.body.dataset.state = "ready";
  }

  function params() {
    const data = new FormData(form);
    return { version: data.get("version"), from: data.get("from"), to: data.get("to") };
  }

  async function load() {
    const p = params();
    statusLine.textContent = "Reading the review…";
    document.body.dataset.state = "loading";
    const url = new URL(window.location.href);
    for (const key of ["version", "from", "to"]) url.searchParams.set(key, p[key]);
    window.history.replaceState(null, "", url.pathname + url.search);
    try {
      const q = new URLSearchParams({ from: p.from, to: p.to, limit: "12" });
      const r = await call(`/v1/definitions/${p.version}/review?${q}`);
      render(await r.json());
      statusLine.textContent = "";
    } catch (error) {
      if (error instanceof AuthError) return askForToken(error.message);
      statusLine.textContent = "Could not read the review: " + error.message;
      document.body.dataset.state = "error";
    }
  }

  async function downloadCsv() {
    const p = params();
    const r = await call(`/v1/definitions/${p.version}/review.csv?` + new URLSearchParams({ from: p.from, to: p.to }));
    const link = el("a", { href: URL.createObjectURL(await r.blob()), download: `review-v${p.version}.csv` });
    link.click();
  }

  // ---- suggestion (part of the page only where the server offers it)
  async function offerSuggestions() {
    try {
      const spec = await (await fetch("/openapi.json")).json();
      document.getElementById("suggest").hidden = !spec.paths["/v1/definitions/{version}/suggest"];
    } catch (e) {
      document.getElementById("suggest").hidden = true; // no OpenAPI served: no probe, no section
    }
  }

  async function suggest(event) {
    event.preventDefault();
    const admin = new FormData(event.target).get("admin");
    const p = params(), note = document.getElementById("suggest-status");
    note.textContent = "Fitting on older outcomes, judging on newer leads…";
    try {
      const r = await call(`/v1/definitions/${p.version}/suggest`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ from: p.from, to: p.to }),
      }, admin);
      showSuggestion(await r.json());
      note.textContent = "";
    } catch (error) {
      note.textContent = "No suggestion: " + error.message;
    }
  }

  function showSuggestion(s) {
    const shown = document.getElementById("suggestion");
    shown.hidden = false;
    shown.dataset.draft = s.draft_version || "";
    document.getElementById("suggest-message").textContent = s.message ||
      `Draft version ${s.draft_version}: ${s.changes.length} changes, from ${s.split.training_outcomes} outcomes.`;
    document.getElementById("changes").replaceChildren(...s.changes.map((c) => el("li", {}, c.sentence)));
    const side = s.backtest;
    const lines = side ? [
      ["leads to sales", "leads_to_sales"], ["accepted", "accepted"], ["rejected", "rejected"],
      ["acceptance rate", "acceptance_rate"], ["won", "won"], ["revenue", "revenue"],
      ["kept from sales that sales accepted", "kept_from_sales_accepted"],
    ] : [];
    document.querySelector("#side-by-side tbody").replaceChildren(...lines.map(([label, key]) => {
      const show = (v) => (key === "acceptance_rate" ? pct(v) : key === "revenue" ? money(v) : v);
      return row([[label], [show(side.active[key]), "num"], [show(side.suggested[key]), "num"]]);
    }));
    document.getElementById("diff").textContent = s.diff ? s.diff.text : "";
    const button = document.getElementById("publish");
    button.hidden = !s.draft_version;
    button.onclick = async () => {
      const note = document.getElementById("suggest-status");
      try {
        // Whatever admin token the field holds now: publishing is the admin's decision.
        const admin = document.querySelector("#suggest-form input[name=admin]").value;
        await call(`/v1/definitions/${s.draft_version}/publish`, { method: "POST" }, admin);
        note.textContent = `Version ${s.draft_version} is now the active definition.`;
      } catch (error) {
        note.textContent = "Not published: " + error.message;
      }
    };
  }

  async function start() {
    takeTokenFromUrl();
    const url = new URL(window.location.href);
    const today = new Date().toISOString().slice(0, 10);
    const ago = new Date(Date.now() - 90 * 864e5).toISOString().slice(0, 10);
    form.elements.from.value = url.searchParams.get("from") || ago;
    form.elements.to.value = url.searchParams.get("to") || today;
    try {
      const versions = await (await call("/v1/definitions")).json();
      const select = form.elements.version;
      select.replaceChildren(...versions.map((d) =>
        el("option", { value: d.version }, `v${d.version} ${d.name} (${d.status})`)));
      const active = versions.find((d) => d.status === "active");
      select.value = url.searchParams.get("version") || (active ? active.version : versions[0].version);
    } catch (error) {
      if (error instanceof AuthError) return askForToken(error.message);
      statusLine.textContent = "Could not list the versions: " + error.message;
      return;
    }
    await offerSuggestions();
    await load();
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  document.getElementById("csv").addEventListener("click", () => downloadCsv().catch((e) => {
    statusLine.textContent = "Could not download the CSV: " + e.message;
  }));
  document.getElementById("suggest-form").addEventListener("submit", suggest);
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, new FormData(event.target).get("token"));
    document.getElementById("auth").hidden = true;
    start();
  });
  start();
})();
