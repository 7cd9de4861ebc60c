// clusterwall dashboard: plain JavaScript, no dependencies. It reads the
// admin API it was served by; with a token-protected API it asks for the
// token once, keeps it in localStorage and sends it as a bearer header
// (also for the live stream, which it reads with fetch rather than
// EventSource so that the token never appears in a URL).
"use strict";
(() => {
  const TOKEN_KEY = "clusterwall.adminToken";
  const MAX_ROWS = 500;
  const $ = (id) => document.getElementById(id);
  let token = localStorage.getItem(TOKEN_KEY) || "";

  // ---- helpers ----

  // el builds an element; children are nodes or text (never parsed as HTML).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  function clock(t, ms) {
    const d = new Date(t);
    if (isNaN(d)) return "";
    const s = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return ms ? `${s}.${pad(d.getMilliseconds(), 3)}` : s;
  }
  function ago(t) {
    const s = Math.round((Date.now() - new Date(t)) / 1000);
    if (isNaN(s)) return "";
    if (s < 60) return `${Math.max(s, 0)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(t).toLocaleString();
  }
  function replace(tbody, rows, cols, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: cols, text: emptyText }))]));
  }
  const isDenied = (a) => a === "Deny" || a === "Drop" || a === "Blocked";
  const isAllowed = (a) => a === "Allow" || a === "DNAT" || a === "Alert" || a === "Detected";
  function badge(action) {
    const cls = isDenied(action) ? "deny" : action === "Detected" || action === "Alert" ? "warn" : isAllowed(action) ? "allow" : "other";
    return el("span", { class: `badge ${cls}`, text: action || "answered" });
  }
  function hostPort(ip, port) {
    if (!ip) return "";
    if (!port) return ip;
    return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
  }
  // destination mirrors the daemon's telemetry.Destination.
  function destination(r) {
    if (r.Fqdn) return r.DestinationPort ? `${r.Fqdn}:${r.DestinationPort}` : r.Fqdn;
    if (r.QueryName) return `${r.QueryName.replace(/\.$/, "")} ${r.QueryType || ""}`.trim();
    if (r.Hostname) return r.Hostname + (r.RequestUri || "");
    return hostPort(r.DestinationIp, r.DestinationPort);
  }
  function ruleText(r) {
    const rule = [r.RuleCollectionGroup, r.RuleCollection, r.Rule].filter(Boolean).join(" › ");
    if (r.category === "WAF") {
      const ids = (r.RuleIds || []).join(", ");
      return [ids && `CRS ${ids}`, (r.Messages || [])[0]].filter(Boolean).join(": ");
    }
    const extra = r.ThreatDescription || r.ActionReason || r.ErrorMessage || (r.ResponseCode ? `answered ${r.ResponseCode}` : "");
    return [rule, extra].filter(Boolean).join(" — ");
  }

  // ---- API ----

  class AuthError extends Error {}
  function headers() {
    const h = { Accept: "application/json" };
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }
  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-store" });
    if (r.status === 401) {
      askToken();
      throw new AuthError("the admin API needs a token");
    }
    if (!r.ok) {
      const e = new Error(`${path}: HTTP ${r.status}`);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }
  function showError(err) {
    const b = $("error");
    if (!err || err instanceof AuthError) {
      b.hidden = true;
      return;
    }
    b.textContent = `Cannot reach the daemon: ${err.message}`;
    b.hidden = false;
  }
  function askToken() {
    const d = $("token-dialog");
    if (!d.open) d.showModal();
  }
  $("token-form").addEventListener("submit", () => {
    token = $("token-input").value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    refresh();
    startLive();
  });

  // ---- status ----

  async function loadStatus() {
    const s = await api("/v1/status");
    const st = $("status");
    const ok = s.lastReload === "ok" || s.lastReload === "";
    st.textContent = `${s.policyName || "no policy"} · generation ${s.generation} · ${s.rules} rules · last reload ${ok ? "ok" : "FAILED"}`;
    st.title = ok ? `applied ${new Date(s.appliedAt).toLocaleString()}` : s.lastReload;
    st.classList.toggle("bad", !ok);
    $("ov-dropped").textContent = `${fmt(s.logLinesDropped)} / ${fmt(s.logLinesRateLimited)}`;
  }

  // ---- overview ----

  async function loadOverview() {
    const ov = await api("/v1/overview?top=10");
    $("ov-allowed").textContent = fmt(ov.allowed);
    $("ov-denied").textContent = fmt(ov.denied);
    $("ov-other").textContent = fmt(ov.other);
    $("ov-observed").textContent = fmt(ov.observed);
    $("ov-bucket").textContent = `(per ${ov.bucketSeconds} s)`;
    lastSeries = ov.series || [];
    drawChart($("chart"), lastSeries);
    replace($("top-denied"), (ov.topDenied || []).map((e) =>
      el("tr", {},
        el("td", { class: "mono" }, el("a", { class: "filter", title: "show in the live stream", onclick: () => filterLive(e.key, "denied") }, e.key)),
        el("td", { class: "num", text: fmt(e.count) }))), 2, "nothing denied in the last hour");
    replace($("top-talkers"), (ov.topTalkers || []).map((e) =>
      el("tr", {},
        el("td", { class: "mono" }, el("a", { class: "filter", title: "show in the live stream", onclick: () => filterLive(e.key, "") }, e.key)),
        el("td", { class: "num", text: fmt(e.count) }),
        el("td", { class: "num", text: fmt(e.denied) }))), 3, "no traffic in the last hour");
  }

  let lastSeries = [];
  window.addEventListener("resize", () => drawChart($("chart"), lastSeries));

  // niceMax rounds up to 1, 2 or 5 × 10^n.
  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(box, series) {
    // Drawn at the box's pixel size, so text and lines are not stretched.
    const W = Math.max(box.clientWidth, 300), H = Math.max(box.clientHeight, 120), L = 48, R = 10, T = 10, B = 24;
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H });
    const n = series.length;
    const max = niceMax(Math.max(0, ...series.map((p) => Math.max(p.allowed, p.denied))));
    const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (const v of [0, max / 2, max]) {
      s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      s.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    // A time label every 10 minutes.
    series.forEach((p, i) => {
      const d = new Date(p.time);
      if (d.getMinutes() % 10 === 0 && d.getSeconds() === 0) {
        s.append(svg("line", { class: "axis", x1: x(i), x2: x(i), y1: T, y2: H - B }));
        s.append(svg("text", { x: x(i), y: H - 6, "text-anchor": "middle" }, `${pad(d.getHours())}:${pad(d.getMinutes())}`));
      }
    });
    const line = (key) => series.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
    const area = (key) => `${line(key)}L${x(n - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
    if (n > 0) {
      s.append(svg("path", { class: "allow-area", d: area("allowed") }));
      s.append(svg("path", { class: "deny-area", d: area("denied") }));
      s.append(svg("path", { class: "allow", d: line("allowed") }));
      s.append(svg("path", { class: "deny", d: line("denied") }));
      // Hover targets with the bucket's numbers.
      const w = (W - L - R) / Math.max(n - 1, 1);
      series.forEach((p, i) => {
        s.append(svg("rect", { x: x(i) - w / 2, y: T, width: w, height: H - T - B, fill: "transparent" },
          svg("title", {}, `${clock(p.time)}  allowed ${p.allowed}, denied ${p.denied}, DNS ${p.other}`)));
      });
    }
    box.replaceChildren(s);
  }

  // ---- live stream ----

  const live = { ctrl: null, paused: false, pending: [], shown: 0 };

  function liveParams() {
    const p = new URLSearchParams();
    for (const [k, id] of [["action", "f-action"], ["category", "f-category"], ["q", "f-q"]]) {
      const v = $(id).value.trim();
      if (v) p.set(k, v);
    }
    return p;
  }
  function liveState(text, cls) {
    const s = $("live-state");
    s.textContent = text;
    s.className = `pill ${cls || ""}`;
  }
  function liveRow(r, fresh) {
    return el("tr", { class: fresh ? "new" : "", dataset: { action: r.Action || "", category: r.category || "" } },
      el("td", { class: "mono", title: r.time, text: clock(r.time, true) }),
      el("td", { title: r.category || "", text: [(r.category || "").replace(/^AZFW/, ""), r.Protocol].filter(Boolean).join(" · ") }),
      el("td", {}, badge(r.Action)),
      el("td", { class: "mono", text: hostPort(r.SourceIp, r.SourcePort) }),
      el("td", { class: "mono", title: r.Protocol || "", text: destination(r) }),
      el("td", { text: ruleText(r) }));
  }
  function addRows(recs, fresh) {
    const body = $("live-rows");
    if (body.firstElementChild && body.firstElementChild.classList.contains("empty")) body.replaceChildren();
    const frag = document.createDocumentFragment();
    for (let i = recs.length - 1; i >= 0; i--) frag.append(liveRow(recs[i], fresh));
    body.prepend(frag);
    while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
    live.shown += recs.length;
    $("live-count").textContent = `${fmt(live.shown)} decisions received; showing the newest ${fmt(body.children.length)}.`;
  }
  function onRecord(rec) {
    if (live.paused) {
      live.pending.push(rec);
      if (live.pending.length > MAX_ROWS) live.pending.shift();
      return;
    }
    addRows([rec], true);
  }

  async function startLive() {
    if (live.ctrl) live.ctrl.abort();
    const ctrl = new AbortController();
    live.ctrl = ctrl;
    live.shown = 0;
    live.pending = [];
    $("live-rows").replaceChildren();
    const params = liveParams();
    liveState("connecting…");
    try {
      const recent = await api(`/v1/decisions?limit=100&${params}`);
      if (ctrl.signal.aborted) return;
      addRows(recent.decisions || [], false); // newest first
    } catch (e) {
      showError(e);
    }
    if (!$("live-rows").children.length) replace($("live-rows"), [], 6, "waiting for decisions…");
    while (!ctrl.signal.aborted) {
      try {
        await readStream(`/v1/decisions/stream?${params}`, ctrl.signal);
      } catch (e) {
        if (ctrl.signal.aborted) return;
        if (e instanceof AuthError) {
          liveState("needs a token", "off");
          return;
        }
      }
      if (ctrl.signal.aborted) return;
      liveState("reconnecting…", "off");
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  // readStream reads Server-Sent Events with fetch (so the bearer token
  // goes in a header) until the stream ends.
  async function readStream(path, signal) {
    const r = await fetch(path, { headers: { ...headers(), Accept: "text/event-stream" }, signal, cache: "no-store" });
    if (r.status === 401) {
      askToken();
      throw new AuthError("the admin API needs a token");
    }
    if (!r.ok || !r.body) throw new Error(`stream: HTTP ${r.status}`);
    liveState(live.paused ? "paused" : "live", "on");
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (!data) continue;
        try {
          const v = JSON.parse(data);
          if (event === "message") onRecord(v);
          else if (event === "dropped") $("live-count").textContent += ` The stream fell behind: ${fmt(v.dropped)} decisions skipped.`;
        } catch (_) { /* a malformed event: skip it */ }
      }
    }
  }

  function filterLive(q, action) {
    $("f-q").value = q;
    $("f-action").value = action;
    $("f-category").value = "";
    location.hash = "#live";
    startLive();
  }

  let filterTimer;
  $("live-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(startLive, 300);
  });
  $("live-filter").addEventListener("submit", (e) => e.preventDefault());
  $("live-pause").addEventListener("click", () => {
    live.paused = !live.paused;
    $("live-pause").textContent = live.paused ? "Resume" : "Pause";
    if (!live.paused) {
      addRows(live.pending.reverse(), true);
      live.pending = [];
    }
    liveState(live.paused ? "paused" : "live", live.paused ? "" : "on");
  });
  $("live-clear").addEventListener("click", () => {
    live.shown = 0;
    replace($("live-rows"), [], 6, "waiting for decisions…");
    $("live-count").textContent = "";
  });

  // ---- policy ----

  // ruleMatches renders what a rule matches (GET /v1/rules): "sources →
  // destinations · protocols ports", and a DNAT rule's translation.
  function ruleMatches(r) {
    const list = (a) => (a && a.length ? a.join(", ") : "");
    if (!r.sources && !r.destinations) return "";
    let s = `${list(r.sources) || "*"} → ${list(r.destinations) || "*"}`;
    const proto = list(r.protocols), ports = list(r.ports);
    if (proto || ports) s += ` · ${proto}${ports ? " " + ports : ""}`;
    if (r.translated) s += ` ⇒ ${r.translated}`;
    return s;
  }

  async function loadPolicy() {
    let data;
    try {
      data = await api("/v1/rules");
    } catch (e) {
      if (e.status === 404) {
        $("policy-body").replaceChildren(el("p", { class: "hint", text: "This daemon does not report rule hit counts (GET /v1/rules)." }));
        return;
      }
      throw e;
    }
    const only = $("policy-neverhit").checked;
    const rules = data.rules || [];
    const never = rules.filter((r) => !r.hits).length;
    const groups = new Map();
    for (const r of rules) {
      const g = r.ruleCollectionGroup || "(no group)";
      if (!groups.has(g)) groups.set(g, { prio: r.groupPriority, colls: new Map() });
      const colls = groups.get(g).colls;
      const key = `${r.kind}\u0000${r.ruleCollection}`;
      if (!colls.has(key)) colls.set(key, { name: r.ruleCollection, kind: r.kind, action: r.action, priority: r.priority, rules: [] });
      colls.get(key).rules.push(r);
    }
    const collCount = [...groups.values()].reduce((n, g) => n + g.colls.size, 0);
    const summary = [`generation ${data.generation}`, `${rules.length} rules in ${collCount} collections`, `${never} never hit since the daemon started`];
    const denyHits = rules.filter((r) => r.action === "Deny").reduce((n, r) => n + (r.hits || 0), 0);
    if (data.defaultDenyHits !== undefined) {
      summary.push(`${fmt(data.defaultDenyHits)} flows denied by default (no rule matched: kernel and L7 proxy)`);
      summary.push(`${fmt(denyHits)} denied by Deny rules`);
    }
    $("policy-summary").replaceChildren(el("span", { text: summary.join(" · ") }),
      ...(data.countersError ? [" ", el("span", { class: "badge warn", title: data.countersError, text: "kernel counters unavailable" })] : []));
    const out = [];
    const sortedGroups = [...groups.entries()].sort((a, b) => (a[1].prio ?? 0) - (b[1].prio ?? 0));
    for (const [gname, g] of sortedGroups) {
      const colls = [...g.colls.values()].sort((a, b) => a.priority - b.priority);
      const collEls = [];
      for (const c of colls) {
        const rs = only ? c.rules.filter((r) => !r.hits) : c.rules;
        if (!rs.length) continue;
        collEls.push(el("div", { class: "coll panel" },
          el("h3", {}, c.name, el("span", { class: "hint", text: `${c.kind} · ${c.action} · priority ${c.priority}` })),
          el("table", { class: "data rules" },
            el("thead", {}, el("tr", {}, el("th", { text: "Rule" }), el("th", { text: "Matches" }), el("th", { text: "Action" }), el("th", { class: "num", text: "Hits" }), el("th", { text: "Last hit" }))),
            el("tbody", {}, rs.map((r) => el("tr", { class: r.hits ? "" : "never", dataset: { rule: r.rule } },
              el("td", { class: "mono", text: r.rule }),
              el("td", { class: "mono matches", text: ruleMatches(r) }),
              el("td", {}, badge(r.action)),
              el("td", { class: "num hits", text: r.hits ? fmt(r.hits) : "never hit" }),
              el("td", { title: r.lastHit || "", text: r.lastHit ? ago(r.lastHit) : "–" })))))));
      }
      if (collEls.length) out.push(el("div", { class: "group" }, el("h2", { text: `${gname}${g.prio !== undefined ? ` (priority ${g.prio})` : ""}` }), collEls));
    }
    $("policy-body").replaceChildren(...(out.length ? out : [el("p", { class: "hint", text: only ? "Every rule has been hit." : "The policy has no rules." })]));
  }
  $("policy-neverhit").addEventListener("change", () => loadPolicy().catch(showError));

  // ---- WAF ----

  async function loadWAF() {
    const d = await api("/v1/decisions?category=WAF&limit=200");
    replace($("waf-rows"), (d.decisions || []).map((r) => el("tr", {},
      el("td", { class: "mono", title: r.time, text: clock(r.time) }),
      el("td", {}, badge(r.Action)),
      el("td", { class: "mono", text: r.SourceIp || "" }),
      el("td", { text: r.Hostname || "" }),
      el("td", { class: "mono", text: `${r.Method || ""} ${r.RequestUri || ""}`.trim() }),
      el("td", { class: "mono", text: (r.RuleIds || []).join(", ") }),
      el("td", { text: (r.Messages || []).join("; ") }),
      el("td", { class: "num", text: r.AnomalyScore || "" }),
      el("td", { class: "mono", text: r.CorrelationId || "" }))), 9, "no WAF decisions since the daemon started");
  }

  // ---- DNS ----

  async function loadDNS() {
    const d = await api("/v1/dns/upstreams");
    $("dns-state").textContent = d.enabled ? `The DNS proxy listens on ${d.listen}.` : "The DNS proxy is off (dns.listen is not set in the daemon's config).";
    replace($("dns-rows"), (d.upstreams || []).map((u) => el("tr", {},
      el("td", { class: "mono", text: u.addr }),
      el("td", {}, el("span", { class: `badge ${u.healthy ? "allow" : "deny"}`, text: u.healthy ? "healthy" : "down" })),
      el("td", { class: "num", text: fmt(u.consecutiveFailures) }),
      el("td", { class: "num", text: fmt(u.queries) }),
      el("td", { class: "num", text: fmt(u.failures) }),
      el("td", { class: "num", text: u.queries ? `${((100 * u.failures) / u.queries).toFixed(1)} %` : "–" }))), 6, d.enabled ? "no upstreams configured" : "—");
  }

  // ---- tabs and refresh ----

  const loaders = { overview: loadOverview, policy: loadPolicy, waf: loadWAF, dns: loadDNS };
  function currentTab() {
    const t = location.hash.replace(/^#/, "");
    return document.getElementById(t)?.classList.contains("tab") ? t : "overview";
  }
  async function refresh() {
    const tab = currentTab();
    try {
      await loadStatus();
      if (loaders[tab]) await loaders[tab]();
      showError(null);
    } catch (e) {
      showError(e);
    }
  }
  function showTab() {
    const tab = currentTab();
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== tab;
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
    refresh();
  }
  window.addEventListener("hashchange", showTab);
  showTab();
  startLive(); // the stream runs in every tab, so switching to it shows what came in
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
})();
