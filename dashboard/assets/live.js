// The operators' live page: one Server-Sent Events message a second fills the counters and
// reloads the server-drawn charts. Text goes in with textContent, never as HTML.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const set = (id, v) => { const e = $(id); if (e) e.textContent = v; };
  const peak = (p) => (p ? fmt(p.count) + " at " + p.at.slice(11, 19) : "–");
  const after = (s) => (s % 3600 === 0 ? "+" + s / 3600 + " h" : s % 60 === 0 ? "+" + s / 60 + " min" : "+" + s + " s");

  function launches(list) {
    const root = $("launches");
    if (!list.length) return;
    root.replaceChildren();
    for (const l of list.slice(0, 3)) {
      const h = document.createElement("h3");
      h.textContent = l.campaign_id + ": " + fmt(l.users) + " users since " + l.started_at;
      const t = document.createElement("table");
      t.className = "launch";
      t.dataset.campaign = l.campaign_id;
      const head = t.insertRow();
      for (const m of l.milestones) {
        const th = document.createElement("th");
        th.textContent = after(m.after_seconds);
        head.appendChild(th);
      }
      const row = t.insertRow();
      for (const m of l.milestones) {
        const td = row.insertCell();
        td.textContent = m.reached ? fmt(m.users) : fmt(m.users) + " so far";
      }
      const wrap = document.createElement("div");
      wrap.className = "scroll";
      wrap.appendChild(t);
      const chart = document.createElement("div");
      chart.className = "chart";
      const img = document.createElement("img");
      img.alt = "launch curve of " + l.campaign_id;
      img.src = "/live/launch.svg?campaign=" + encodeURIComponent(l.campaign_id) + "&t=" + Date.now();
      chart.appendChild(img);
      root.append(h, wrap, chart);
    }
  }

  const source = new EventSource("/api/v1/live/stream");
  source.onopen = () => set("status", "live");
  source.onerror = () => set("status", "reconnecting");
  source.onmessage = (msg) => {
    const s = JSON.parse(msg.data);
    set("status", "live");
    set("clock", s.clock || "waiting for events");
    set("rate", fmt(s.events_per_second));
    set("photos-rate", fmt(s.photos_per_second));
    set("events-total", fmt(s.events_total));
    set("active-minute", fmt(s.active_users.last_minute));
    set("active-hour", fmt(s.active_users.last_hour));
    set("lag", fmt(s.consumer.lag));
    if (s.today) {
      set("today-events", fmt(s.today.events));
      set("today-photos", fmt(s.today.photos));
      set("peak-second", peak(s.today.peak_second_events));
      set("peak-minute", peak(s.today.peak_minute_events));
    }
    const img = $("hour-chart");
    if (img) img.src = "/live/hour.svg?t=" + Date.now();
    launches(s.launches);
  };
})();
