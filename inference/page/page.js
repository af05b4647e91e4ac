// The inference node's page: a chat box that streams from
// /v1/chat/completions, each answer's receipt decoded, and the served
// model's lineage from /v1/fedtune/lineage. No dependencies.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var history = [];
  var modelID = "";
  // How often the lineage is asked for again.
  var LINEAGE_REFRESH_MS = 5000;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function headers() {
    var h = { "Content-Type": "application/json" };
    var key = $("api-key").value;
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function short(hex) { return hex && hex.length > 16 ? hex.slice(0, 12) + "…" + hex.slice(-4) : hex; }

  // decodePayload returns the receipt inside a DSSE envelope: the payload
  // is base64 of the receipt's JSON (UTF-8).
  function decodePayload(env) {
    var bin = atob(env.payload);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function field(dl, name, label, value, title) {
    var dt = el("dt", "", label), dd = el("dd", "hex", value);
    dd.dataset.field = name;
    if (title) dd.title = title;
    dl.appendChild(dt); dl.appendChild(dd);
  }

  function showReceipt(turn, env) {
    var box = el("details", "receipt");
    box.open = true;
    box.appendChild(el("summary", "", "receipt"));
    var r;
    try { r = decodePayload(env); } catch (e) {
      box.appendChild(el("p", "error", "receipt payload unreadable: " + e));
      turn.appendChild(box);
      return;
    }
    var dl = el("dl");
    field(dl, "model", "model", r.model);
    if (r.adapter) field(dl, "adapter", "adapter", r.adapter);
    field(dl, "block", "block", r.block ? "height " + r.block.height + " · " + r.block.hash : "standalone (no block)");
    field(dl, "signer", "signer", r.signer, "public key " + r.public_key);
    field(dl, "tokens_hash", "tokens hash", r.tokens_hash);
    field(dl, "request_hash", "request hash", r.request_hash);
    field(dl, "tokens", "tokens", r.prompt_tokens + " prompt + " + r.completion_tokens + " generated");
    if (r.sampling) field(dl, "sampling", "sampling", "temperature " + r.sampling.temperature + " · top_p " + r.sampling.top_p + " · seed " + r.sampling.seed);
    field(dl, "time", "time", r.time);
    box.appendChild(dl);
    var pre = el("pre", "envelope", JSON.stringify(env));
    pre.title = "the DSSE envelope: check it with fedtune audit receipt";
    box.appendChild(pre);
    turn.appendChild(box);
  }

  async function send(ev) {
    ev.preventDefault();
    var text = $("msg").value.trim();
    if (!text) return;
    $("msg").value = "";
    $("send").disabled = true;
    var user = el("div", "turn user");
    user.appendChild(el("div", "text", text));
    $("log").appendChild(user);
    history.push({ role: "user", content: text });
    var turn = el("div", "turn assistant");
    var out = el("div", "text answer");
    turn.appendChild(out);
    $("log").appendChild(turn);
    var answer = "", env = null;
    try {
      var body = { model: modelID, messages: history, stream: true,
        max_tokens: parseInt($("max-tokens").value, 10) || 128,
        temperature: parseFloat($("temperature").value) || 0 };
      var resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!resp.ok) {
        var e = await resp.json().catch(function () { return {}; });
        throw new Error((e.error && e.error.message) || resp.status + " " + resp.statusText);
      }
      var reader = resp.body.getReader(), dec = new TextDecoder(), buf = "";
      for (;;) {
        var r = await reader.read();
        if (r.done) break;
        buf += dec.decode(r.value, { stream: true });
        var i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          var event = buf.slice(0, i); buf = buf.slice(i + 2);
          event.split("\n").forEach(function (line) {
            if (line.indexOf("data: ") !== 0) return;
            var data = line.slice(6);
            if (data === "[DONE]") return;
            var c = JSON.parse(data);
            if (c.error) throw new Error(c.error.message);
            (c.choices || []).forEach(function (ch) {
              if (ch.delta && ch.delta.content) { answer += ch.delta.content; out.textContent = answer; }
            });
            if (c.receipt) env = c.receipt;
          });
        }
      }
      history.push({ role: "assistant", content: answer });
      turn.dataset.done = "true";
      if (env) showReceipt(turn, env);
      else turn.appendChild(el("p", "receipt none", "no receipt: this node does not sign its answers"));
    } catch (e) {
      history.pop();
      turn.appendChild(el("p", "error", String(e.message || e)));
    } finally {
      $("send").disabled = false;
    }
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // plot draws the eval loss of each round: one circle.pt per round that
  // reported a loss.
  function plot(rounds) {
    var pts = rounds.filter(function (r) { return typeof r.eval_loss === "number"; });
    var W = 420, H = 200, L = 44, R = 12, T = 12, B = 30;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "eval loss by round" });
    s.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    s.appendChild(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    if (!pts.length) {
      s.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no round reported an eval loss"));
      return s;
    }
    var r0 = pts[0].round, r1 = pts[pts.length - 1].round;
    var lo = Math.min.apply(null, pts.map(function (p) { return p.eval_loss; }));
    var hi = Math.max.apply(null, pts.map(function (p) { return p.eval_loss; }));
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    var x = function (r) { return r1 === r0 ? (L + W - R) / 2 : L + (r - r0) / (r1 - r0) * (W - L - R); };
    var y = function (v) { return T + (hi - v) / (hi - lo) * (H - T - B); };
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      s.appendChild(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(3)));
    });
    pts.forEach(function (p) {
      s.appendChild(svg("text", { x: x(p.round), y: H - B + 16, "text-anchor": "middle" }, String(p.round)));
    });
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" }, "round"));
    s.appendChild(svg("polyline", { class: "line", points: pts.map(function (p) { return x(p.round) + "," + y(p.eval_loss); }).join(" ") }));
    pts.forEach(function (p) {
      // A loss only the coordinator reports (no RoundEvaluated on the
      // ledger) is drawn hollow.
      var coord = p.eval_source === "coordinator";
      var c = svg("circle", { class: coord ? "pt coord" : "pt", cx: x(p.round), cy: y(p.eval_loss), r: 4, "data-round": p.round,
        "data-source": p.eval_source || "" });
      c.appendChild(svg("title", {}, "round " + p.round + ": eval loss " + p.eval_loss +
        (coord ? " (reported by the coordinator, not on the ledger)" : " (RoundEvaluated on the ledger)")));
      s.appendChild(c);
    });
    return s;
  }

  function showLineage(l) {
    var sum = $("lineage-summary");
    var add = function (k, v) { sum.appendChild(el("dt", "", k)); sum.appendChild(el("dd", "hex", v)); };
    add("model", l.model);
    if (l.adapter) add("adapter", l.adapter);
    if (l.standalone) {
      $("lineage-status").textContent = "standalone: no ledger lineage";
      $("lineage-status").className = "standalone";
      $("lineage-body").hidden = false;
      ["plot", "rounds", "datasets"].forEach(function (id) { $(id).hidden = true; });
      Array.prototype.forEach.call($("lineage-body").querySelectorAll("h3"), function (h) { h.hidden = true; });
      return;
    }
    $("lineage-status").textContent = l.rounds.length + " committed round" + (l.rounds.length === 1 ? "" : "s") +
      ", " + l.datasets.length + " dataset" + (l.datasets.length === 1 ? "" : "s");
    if (l.job) add("job", l.job);
    if (l.base) add("base model", l.base);
    if (l.block) add("committed in", "block " + l.block.height + " · " + l.block.hash);
    $("plot").appendChild(plot(l.rounds));
    if (l.eval_source) { $("eval-source").textContent = "eval losses: " + l.eval_source; $("eval-source").hidden = false; }
    var names = {};
    l.datasets.forEach(function (d) { names[d.digest] = d.name || short(d.digest); });
    var rb = $("rounds").tBodies[0];
    l.rounds.forEach(function (r) {
      var tr = el("tr", "round");
      tr.appendChild(el("td", "", String(r.round)));
      tr.appendChild(el("td", "", String(r.height)));
      var m = el("td", "hex", short(r.model)); m.title = r.model; tr.appendChild(m);
      var ev = el("td", "eval", typeof r.eval_loss === "number" ? r.eval_loss.toFixed(4) : "—");
      if (r.eval_source) { ev.dataset.source = r.eval_source; if (r.eval_source === "coordinator") ev.textContent += " (coordinator)"; }
      tr.appendChild(ev);
      var c = el("td", "contributors");
      (r.contributors || []).forEach(function (k, i) {
        if (i) c.appendChild(document.createTextNode(", "));
        var s = el("span", "contributor hex", short(k.member));
        s.title = k.member + (k.dataset ? " on " + (names[k.dataset] || k.dataset) : "") + (k.weight ? " · weight " + k.weight : "") +
          (typeof k.loss_removed === "number" ? " · loss removed alone " + k.loss_removed.toFixed(6) : "");
        c.appendChild(s);
        if (k.dataset) c.appendChild(document.createTextNode(" (" + (names[k.dataset] || short(k.dataset)) + ")"));
      });
      tr.appendChild(c);
      rb.appendChild(tr);
    });
    var db = $("datasets").tBodies[0];
    l.datasets.forEach(function (d) {
      var tr = el("tr", "dataset");
      tr.appendChild(el("td", "", d.name || "—"));
      var g = el("td", "hex", short(d.digest)); g.title = d.digest; tr.appendChild(g);
      tr.appendChild(el("td", "licence", d.licence || "unknown"));
      db.appendChild(tr);
    });
    $("lineage-body").hidden = false;
  }

  // lastLineage is the lineage JSON drawn; refreshLineage redraws when
  // the node answers another (a new model swapped in, an eval loss that
  // came in).
  var lastLineage = "";
  function clearLineage() {
    ["lineage-summary", "plot"].forEach(function (id) { $(id).textContent = ""; });
    [$("rounds").tBodies[0], $("datasets").tBodies[0]].forEach(function (b) { b.textContent = ""; });
    $("eval-source").hidden = true;
    ["plot", "rounds", "datasets"].forEach(function (id) { $(id).hidden = false; });
    Array.prototype.forEach.call($("lineage-body").querySelectorAll("h3"), function (h) { h.hidden = false; });
  }
  async function refreshLineage() {
    try {
      var resp = await fetch("/v1/fedtune/lineage", { headers: headers() });
      if (!resp.ok) return;
      var text = await resp.text();
      if (text === lastLineage) return;
      var l = JSON.parse(text);
      lastLineage = text;
      clearLineage();
      showLineage(l);
      $("lineage").dataset.loaded = "true";
    } catch (e) { /* the next refresh tries again */ }
  }

  async function load() {
    try {
      var m = await fetch("/v1/models", { headers: headers() }).then(function (r) { return r.json(); });
      if (m.data && m.data.length) { modelID = m.data[0].id; $("model-id").textContent = modelID; }
    } catch (e) { $("model-id").textContent = "unknown (" + e + ")"; }
    try {
      var resp = await fetch("/v1/fedtune/lineage", { headers: headers() });
      if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
      lastLineage = await resp.text();
      showLineage(JSON.parse(lastLineage));
      $("lineage").dataset.loaded = "true";
    } catch (e) { $("lineage-status").textContent = "lineage unavailable: " + e; }
  }

  $("form").addEventListener("submit", send);
  $("api-key").addEventListener("change", function () {
    if ($("lineage").dataset.loaded) return;
    $("lineage-summary").textContent = "";
    load();
  });
  $("msg").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
  });
  load();
  setInterval(refreshLineage, LINEAGE_REFRESH_MS);
})();
