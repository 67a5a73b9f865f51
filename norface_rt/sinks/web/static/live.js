// norface-rt live view: the page's only script (hand-written, no library, nothing fetched from
// elsewhere). Reads /api/info once, the results as Server-Sent Events (/events), each stream's
// annotated images as MJPEG (/stream/ID.mjpg) and the stream states from /health every 2 s.
// The images are read by this script, not by the <img> itself: each part names its frame
// (X-Seq), so an image is shown once its frame's results are in and the bars beside it are that
// frame's (the results come in batches every 100 ms, the images as they are made).
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const only = params.getAll("stream");
  const pickedAus = (params.get("aus") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const WINDOW_S = Math.min(600, Math.max(5, Number(params.get("window")) || 30));
  const N_AUS = 4;            // AUs drawn per face when none are picked: the most varying
  const KEEP_SEQS = 20000;    // sequence numbers kept per stream (for people checking delivery)
  const TRACK_GONE_S = WINDOW_S;
  const KEEP_RESULTS = 300;   // results kept per stream to match the image shown
  // A browser opens at most 6 connections to one server (HTTP/1.1); the events and the health
  // polls need two, so at most 4 streams' images are read at once: the first 4 cards on screen.
  const MAX_IMAGE_STREAMS = 4;
  const RESULTS_WAIT_MS = 500;  // an image whose results have not come by then is shown anyway

  const url = (path, extra) => {
    const q = new URLSearchParams(extra || {});
    if (token) q.set("token", token);
    const s = q.toString();
    return path + (s ? "?" + s : "");
  };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const pct = (v) => (100 * v).toFixed(0) + "%";

  // Everything the page knows; exposed for people debugging a feed (and the browser test).
  const live = { info: null, streams: {}, events: 0, missed: 0, connected: false, health: null };
  window.norfaceLive = live;

  function trackColor(id) {
    const c = live.info.track_colors;
    return id >= 0 ? c[id % c.length] : live.info.untracked_color;
  }
  // The colours are the package's (/api/info), the same as the overlay's and `norface-rt plot`'s.
  function seriesColor(i) {
    const c = live.info.series_colors;
    return c[i % c.length];
  }
  function emotionColor(name, i) {
    return live.info.emotion_colors[name] || seriesColor(i);
  }

  // ---------------------------------------------------------------- streams and their cards
  function stream(id) {
    let st = live.streams[id];
    if (st) return st;
    st = live.streams[id] = {
      id, received: 0, missed: 0, lastSeq: -1, seqs: [], frameIndex: null, ended: false,
      error: null, faces: [], tracks: new Map(), times: [], dropped: 0, skipped: 0, lost: 0,
      latest: 0, dirty: true, el: null, recent: new Map(), pending: [], shown: null,
      shownUrl: null, synced: 0, unsynced: 0,
    };
    if (only.length && !only.includes(id)) return st;
    const card = document.createElement("section");
    card.className = "card";
    card.innerHTML =
      `<h2><span>${esc(id)}</span><span class="badge starting" data-role="state">starting</span></h2>
       <div class="row">
         <div class="video"><img alt="annotated video of ${esc(id)}" data-role="img">
           <div class="paused" data-role="paused" hidden><span>images paused: more than
           ${MAX_IMAGE_STREAMS} streams on screen (scroll, or open <a data-role="only">this
           stream alone</a>)</span></div></div>
         <div class="faces" data-role="faces"><span class="dim">no face yet</span></div>
       </div>
       <div class="legend" data-role="legend"></div>
       <div class="timelines" data-role="timelines"></div>
       <div class="meta" data-role="meta"></div>`;
    $("cards").appendChild(card);
    const nav = document.createElement("a");
    nav.href = "#";
    nav.textContent = id;
    nav.addEventListener("click", (ev) => { ev.preventDefault(); card.scrollIntoView(); });
    $("streams").appendChild(nav);
    const role = (r) => card.querySelector(`[data-role="${r}"]`);
    st.el = { card, state: role("state"), img: role("img"), faces: role("faces"),
              legend: role("legend"), timelines: role("timelines"), meta: role("meta"),
              paused: role("paused"), tracks: new Map() };
    role("only").href = url("", { stream: id });
    st.src = url("stream/" + encodeURIComponent(id) + ".mjpg");
    st.visible = false;
    st.reading = null;  // the AbortController of the image stream being read
    onScreen.observe(card);
    scheduleImages();
    st.el.legend.innerHTML = live.info.model.emotion_names.map((e, i) =>
      `<span><i style="background:${emotionColor(e, i)}"></i>${esc(e)}</span>`).join("");
    return st;
  }

  function onFrame(msg) {
    const st = stream(msg.stream_id);
    if (st.lastSeq >= 0 && msg.seq > st.lastSeq + 1) st.missed += msg.seq - st.lastSeq - 1;
    st.lastSeq = msg.seq;
    st.received += 1;
    st.seqs.push(msg.seq);
    if (st.seqs.length > KEEP_SEQS) st.seqs.splice(0, st.seqs.length - KEEP_SEQS);
    st.frameIndex = msg.frame_index;
    st.faces = msg.faces;
    st.recent.set(msg.seq, msg.faces);
    if (st.recent.size > KEEP_RESULTS) st.recent.delete(st.recent.keys().next().value);
    st.dropped = msg.dropped_frames;
    st.skipped = msg.skipped_frames || 0;
    st.lost = msg.lost_frames || 0;
    st.error = msg.error;
    st.untrained = msg.untrained;
    st.auMax = msg.au_intensity_max || live.info.model.au_intensity_max || 5;
    const t = msg.emit_time;
    st.latest = t;
    st.times.push(t);
    while (st.times.length && st.times[0] < t - 5) st.times.shift();
    for (const f of msg.faces) {
      let tr = st.tracks.get(f.track_id);
      if (!tr) {
        tr = { id: f.track_id, t: [], emotions: {}, aus: {} };
        st.tracks.set(f.track_id, tr);
      }
      tr.t.push(t);
      for (const [k, v] of Object.entries(f.emotions)) (tr.emotions[k] ||= []).push(v);
      for (const [k, v] of Object.entries(f.au_intensity)) (tr.aus[k] ||= []).push(v);
    }
    for (const [id, tr] of st.tracks) {  // keep the window; forget faces gone for a while
      let cut = 0;
      while (cut < tr.t.length && tr.t[cut] < t - WINDOW_S) cut++;
      if (cut) {
        tr.t.splice(0, cut);
        for (const a of Object.values(tr.emotions)) a.splice(0, cut);
        for (const a of Object.values(tr.aus)) a.splice(0, cut);
      }
      if (!tr.t.length || tr.t[tr.t.length - 1] < t - TRACK_GONE_S) st.tracks.delete(id);
    }
    st.dirty = true;
  }

  function onEos(msg) {
    const st = stream(msg.stream_id);
    st.ended = true;
    st.error = msg.error;
    st.dirty = true;
    // its image connection goes to a stream still running (after the last image came)
    setTimeout(scheduleImages, 1000);
  }

  // ---------------------------------------------------------------- images
  const CRLF2 = [13, 10, 13, 10];
  const latin1 = new TextDecoder("latin1");

  function find(buf, pat, from) {
    outer: for (let i = from; i <= buf.length - pat.length; i++) {
      for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
      return i;
    }
    return -1;
  }

  // multipart/x-mixed-replace as the server writes it: each part's head (with Content-Length,
  // X-Frame-Index, X-Seq), a blank line, the JPEG, then the boundary line.
  async function readParts(reader, onPart) {
    let buf = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      for (;;) {
        const end = find(buf, CRLF2, 0);
        if (end < 0) break;
        const head = latin1.decode(buf.subarray(0, end));
        const len = Number((/content-length:\s*(\d+)/i.exec(head) || [])[1]);
        if (!Number.isFinite(len)) { buf = buf.subarray(end + 4); continue; }
        if (buf.length < end + 4 + len) break;
        const num = (re) => Number((re.exec(head) || [])[1]);
        onPart(num(/x-seq:\s*(-?\d+)/i), num(/x-frame-index:\s*(-?\d+)/i),
               buf.slice(end + 4, end + 4 + len));
        buf = buf.subarray(end + 4 + len);
      }
    }
  }

  const streamingFetch = !!(window.ReadableStream && window.TextDecoder && window.AbortController
                            && "body" in Response.prototype);
  const onScreen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const st = Object.values(live.streams).find((s) => s.el && s.el.card === e.target);
      if (st) st.visible = e.isIntersecting;
    }
    scheduleImages();
  });

  // Reads the images of the first MAX_IMAGE_STREAMS streams whose cards are on screen; stops
  // the others' (their connection closes, the server stops sending them images).
  function scheduleImages() {
    const shown = Object.values(live.streams).filter((s) => s.el);
    const wanted = new Set(shown.filter((s) => s.visible && !s.ended).slice(0, MAX_IMAGE_STREAMS));
    for (const st of shown) {
      if (wanted.has(st) && !st.reading) {
        if (!streamingFetch) {
          st.el.img.src = st.src;  // an older browser: the <img> reads the stream, bars newest
          st.reading = true;
        } else {
          st.reading = new AbortController();
          readImages(st, st.reading);
        }
      } else if (!wanted.has(st) && st.reading && st.reading !== true) {  // (an ended stream's
        // last image stays shown: it is a blob of its own)
        st.reading.abort();
        st.reading = null;
      }
      st.el.paused.hidden = !(st.visible && !st.ended && !wanted.has(st));
    }
  }

  async function readImages(st, ctl) {
    const src = st.src;
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch(src, { cache: "no-store", signal: ctl.signal });
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        await readParts(r.body.getReader(), (seq, frame, jpeg) => {
          st.pending.push({ seq, frame, blob: new Blob([jpeg], { type: "image/jpeg" }),
                            at: performance.now() });
          if (st.pending.length > 16) st.pending.splice(0, st.pending.length - 16);
        });
      } catch (e) { /* stopped, or the server is away: the events' badge says so */ }
      if (st.ended || ctl.signal.aborted) return;
      await new Promise((res) => setTimeout(res, 2000));
    }
  }

  // The newest image whose frame's results are in (or that waited RESULTS_WAIT_MS for them).
  function showImage(st, now) {
    let pick = -1;
    for (let i = 0; i < st.pending.length; i++) {
      const p = st.pending[i];
      if (p.seq <= st.lastSeq || now - p.at > RESULTS_WAIT_MS) pick = i;
    }
    if (pick < 0) return false;
    const p = st.pending[pick];
    st.pending.splice(0, pick + 1);
    if (st.shownUrl) URL.revokeObjectURL(st.shownUrl);
    st.shownUrl = URL.createObjectURL(p.blob);
    st.el.img.src = st.shownUrl;
    st.shown = { seq: p.seq, frame: p.frame };
    if (st.recent.has(p.seq)) st.synced++; else st.unsynced++;
    return true;
  }

  // ---------------------------------------------------------------- drawing
  function facesHtml(st) {
    // the faces of the frame shown (the newest results while no image is shown)
    const faces = (st.shown && st.recent.get(st.shown.seq)) || st.faces;
    if (!faces.length) return '<span class="dim">no face in this frame</span>';
    const names = live.info.model.emotion_names;
    return [...faces].sort((a, b) => a.box[0] - b.box[0]).map((f) => {
      const col = trackColor(f.track_id);
      const emos = Object.entries(f.emotions).sort((a, b) => b[1] - a[1]);
      const issues = f.quality && !f.quality.ok
        ? `<div class="issues">low quality: ${esc(f.quality.issues.join(", ").replace(/_/g, " "))}</div>` : "";
      const bars = emos.map(([k, v]) => {
        const c = emotionColor(k, names.indexOf(k));
        return `<span>${esc(k)}</span><div class="bar"><span style="width:${(100 * v).toFixed(1)}%;background:${c}"></span></div><span class="pct">${pct(v)}</span>`;
      }).join("");
      const aus = Object.entries(f.au_intensity).map(([k, v]) => {
        const on = (f.au_occurrence[k] || 0) >= 0.5;
        const h = Math.max(0, Math.min(1, v / st.auMax)) * 100;
        return `<div class="${on ? "on" : ""}" title="${esc(k)} ${v.toFixed(2)} (p ${(f.au_occurrence[k] || 0).toFixed(2)})" style="height:${h.toFixed(1)}%;background:${col};opacity:${on ? 1 : 0.4}"><span>${esc(k.replace(/^AU0?/, ""))}</span></div>`;
      }).join("");
      return `<div class="face" style="border-color:${col}">
        <div class="head" style="color:${col}">#${f.track_id} ${esc(f.top_emotion)} ${pct(f.emotions[f.top_emotion] || 0)}</div>
        ${issues}<div class="emos">${bars}</div><div class="aus">${aus}</div><div class="aus-gap"></div></div>`;
    }).join("");
  }

  function chooseAus(tr) {
    const names = Object.keys(tr.aus);
    if (pickedAus.length) return pickedAus.filter((a) => names.includes(a));
    const spread = (a) => {
      const xs = tr.aus[a];
      const m = xs.reduce((s, x) => s + x, 0) / xs.length;
      return xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length;
    };
    const top = [...names].sort((a, b) => spread(b) - spread(a)).slice(0, N_AUS);
    return names.filter((a) => top.includes(a));
  }

  function sizeCanvas(cv) {
    const w = Math.max(100, Math.round(cv.clientWidth * devicePixelRatio));
    const h = Math.max(60, Math.round(cv.clientHeight * devicePixelRatio));
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    const ctx = cv.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return [ctx, w, h];
  }

  // The page's palette lives in live.css; the charts read it from there.
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function axes(ctx, w, h, label) {
    ctx.strokeStyle = cssVar("--chart-line");
    ctx.lineWidth = 1;
    for (let s = 0; s <= WINDOW_S; s += 10) {
      const x = w - (s / WINDOW_S) * w;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    }
    ctx.fillStyle = cssVar("--chart-text");
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.fillText(label, 4, 13 * devicePixelRatio);
    ctx.fillText(`-${WINDOW_S} s`, 4, h - 4);
    ctx.fillText("now", w - 26 * devicePixelRatio, h - 4);
  }

  function drawEmotions(cv, tr, now) {
    const [ctx, w, h] = sizeCanvas(cv);
    const names = live.info.model.emotion_names.filter((e) => tr.emotions[e]);
    const x = (t) => w - ((now - t) / WINDOW_S) * w;
    const base = new Float64Array(tr.t.length);
    names.forEach((e, i) => {
      const ys = tr.emotions[e];
      ctx.beginPath();
      for (let j = 0; j < tr.t.length; j++) ctx.lineTo(x(tr.t[j]), h - (base[j] + ys[j]) * h);
      for (let j = tr.t.length - 1; j >= 0; j--) ctx.lineTo(x(tr.t[j]), h - base[j] * h);
      ctx.closePath();
      ctx.fillStyle = emotionColor(e, i);
      ctx.fill();
      for (let j = 0; j < tr.t.length; j++) base[j] += ys[j];
    });
    axes(ctx, w, h, "emotions");
  }

  function drawAus(cv, tr, now, auMax) {
    const [ctx, w, h] = sizeCanvas(cv);
    const x = (t) => w - ((now - t) / WINDOW_S) * w;
    const chosen = chooseAus(tr);
    ctx.lineWidth = 1.6 * devicePixelRatio;
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    chosen.forEach((a, i) => {
      const ys = tr.aus[a];
      ctx.strokeStyle = seriesColor(i);
      ctx.beginPath();
      for (let j = 0; j < tr.t.length; j++) ctx.lineTo(x(tr.t[j]), h - (ys[j] / auMax) * (h - 4));
      ctx.stroke();
    });
    const label = `AU intensity 0..${auMax}`;
    axes(ctx, w, h, label);
    // the AUs' names in the chart's title line, each in its line's colour (not at the lines'
    // ends, where they covered the newest values)
    let x0 = 4 + ctx.measureText(label).width + 10 * devicePixelRatio;
    chosen.forEach((a, i) => {
      ctx.fillStyle = seriesColor(i);
      ctx.fillText(a, x0, 13 * devicePixelRatio);
      x0 += ctx.measureText(a).width + 8 * devicePixelRatio;
    });
  }

  function drawTimelines(st) {
    const el = st.el;
    for (const [id, row] of el.tracks) {
      if (!st.tracks.has(id)) { row.div.remove(); el.tracks.delete(id); }
    }
    for (const [id, tr] of [...st.tracks].sort((a, b) => a[0] - b[0])) {
      let row = el.tracks.get(id);
      if (!row) {
        const div = document.createElement("div");
        div.className = "track";
        div.innerHTML = `<div class="label" style="color:${trackColor(id)}">#${id}</div>
          <canvas aria-label="emotions of face ${id}"></canvas><canvas aria-label="AUs of face ${id}"></canvas>`;
        el.timelines.appendChild(div);
        const [emo, aus] = div.querySelectorAll("canvas");
        row = { div, emo, aus };
        el.tracks.set(id, row);
      }
      drawEmotions(row.emo, tr, st.latest);
      drawAus(row.aus, tr, st.latest, st.auMax || 5);
    }
  }

  function metaHtml(st) {
    const span = st.times.length > 1 ? st.times[st.times.length - 1] - st.times[0] : 0;
    const fps = span > 0.5 ? ((st.times.length - 1) / span).toFixed(1) : "-";
    const h = live.health && live.health.streams[st.id];
    const warn = (n, what) => (n ? `<span class="warn">${what} ${n}</span>` : `${what} 0`);
    return [
      `frame <b>${(st.shown ? st.shown.frame : st.frameIndex) ?? "-"}</b>`, `<b>${fps}</b> frames/s`,
      `results <b>${st.received}</b> received, ${warn(st.missed, "missed")}`,
      warn(st.dropped, "dropped"), warn(st.skipped, "skipped"), warn(st.lost, "lost"),
      h ? `viewers ${h.viewers}` : "",
      st.untrained ? '<span class="untrained">UNTRAINED MODEL: results are meaningless</span>' : "",
      st.error ? `<span class="warn">error: ${esc(st.error)}</span>` : "",
    ].filter(Boolean).join(" &middot; ");
  }

  function stateOf(st) {
    const h = live.health && live.health.streams[st.id];
    if (st.ended) return st.error ? "error" : "ended";
    return h ? h.state : (st.received ? "running" : "starting");
  }

  let lastCharts = 0;
  function render(now) {
    const charts = now - lastCharts > 100;  // charts at most 10 times a second
    if (charts) lastCharts = now;
    for (const st of Object.values(live.streams)) {
      if (st.el && st.pending.length && showImage(st, performance.now())) st.dirty = true;
      if (!st.el || !st.dirty) continue;
      const s = stateOf(st);
      st.el.state.textContent = s;
      st.el.state.className = "badge " + s;
      st.el.faces.innerHTML = facesHtml(st);
      st.el.meta.innerHTML = metaHtml(st);
      if (charts) { drawTimelines(st); st.dirty = false; }
    }
    requestAnimationFrame(render);
  }

  // ---------------------------------------------------------------- connections
  function setConn(state, text) {
    $("conn").className = "badge " + state;
    $("conn").textContent = text;
  }

  function connect() {
    const es = new EventSource(url("events", { from: "oldest" }));
    es.onopen = () => { live.connected = true; setConn("live", "live"); };
    es.onerror = () => {
      live.connected = false;
      setConn(es.readyState === EventSource.CLOSED ? "offline" : "reconnecting",
              es.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
    };
    es.addEventListener("frame", (ev) => { live.events++; onFrame(JSON.parse(ev.data)); });
    es.addEventListener("eos", (ev) => { live.events++; onEos(JSON.parse(ev.data)); });
    es.addEventListener("stats", (ev) => { live.events++; live.stats = JSON.parse(ev.data); });
    es.addEventListener("gap", (ev) => {
      const g = JSON.parse(ev.data);
      live.missed += g.missed;
      $("totals").textContent = `${live.missed} result message(s) missed (this page fell behind)`;
    });
  }

  async function pollHealth() {
    try {
      const r = await fetch(url("health"), { cache: "no-store" });
      if (r.ok) {
        live.health = await r.json();
        for (const id of Object.keys(live.health.streams)) stream(id).dirty = true;
      }
    } catch (e) { /* the events' badge already says the server is away */ }
    setTimeout(pollHealth, 2000);
  }

  async function start() {
    $("window-s").textContent = WINDOW_S;
    $("events-link").href = url("events");
    $("health-link").href = url("health");
    let r;
    try {
      r = await fetch(url("api/info"), { cache: "no-store" });
    } catch (e) {
      setConn("offline", "server unreachable");
      return;
    }
    if (!r.ok) {
      setConn("error", r.status === 401 ? "token needed: open /?token=TOKEN" : `error ${r.status}`);
      return;
    }
    live.info = await r.json();
    const m = live.info.model;
    $("model").innerHTML = `model ${esc(m.model_id || "?")}` +
      (m.trained === false ? ' <span class="untrained">UNTRAINED</span>' : "");
    for (const id of live.info.streams) stream(id);
    connect();
    pollHealth();
    requestAnimationFrame(render);
  }

  start();
})();
