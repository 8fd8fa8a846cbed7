// procwatch dashboard: plain JavaScript, no framework, no dependency.
// Data: the v1 API. Live alarms: the SSE stream read with fetch (so the token can be sent),
// and polling as the fallback. Everything is drawn with DOM calls and textContent (never
// innerHTML with data); charts are the server's SVG, parsed as an inert document.
'use strict';

const TOKEN_KEY = 'procwatch.token';
const LEVEL_RANK = { OK: 0, STALE: 1, AMBER: 2, RED: 3 };

const state = {
  token: null,
  hosts: [],
  rows: [],
  active: new Map(), // "host\u0000process\u0000metric" -> AlarmEvent
  history: [],
  alarmsAvailable: null, // null unknown, true, false
  streamUp: false,
  more: false, // the server has rows past this page
  sort: { key: 'cpu_mean', desc: true },
  hostFilter: '',
  textFilter: '',
  top: 20,
  window: '5m',
  chartWindow: '1h',
  selected: null, // {host, process}
  refreshMs: 5000,
  lastChart: 0,
  authNeeded: false,
  timer: null,
};

const $ = (sel) => document.querySelector(sel);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---------- formatting ----------
const num = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '–');
function bytes(v) {
  if (!Number.isFinite(v)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
function ago(ms) {
  if (!Number.isFinite(ms)) return '–';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}
const clock = (ts) => (ts ? new Date(ts).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '–');
const alarmKey = (e) => `${e.host}\u0000${e.process}\u0000${e.metric === 'cores' ? 'cpu' : e.metric}`;

// ---------- HTTP ----------
class AuthError extends Error {}
class NotFound extends Error {}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, opts = {}) {
  const r = await fetch(path, { headers: headers(), cache: 'no-store', ...opts });
  if (r.status === 401 || r.status === 403) throw new AuthError(`${r.status}`);
  if (r.status === 404) throw new NotFound(path);
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${msg}`);
  }
  return r;
}
const getJson = async (path) => (await api(path)).json();

function showError(msg) {
  const el = $('#error');
  el.hidden = !msg;
  el.textContent = msg || '';
}

function needAuth() {
  state.authNeeded = true;
  $('#login').hidden = false;
  setLive('off', 'token needed');
  $('#token-input').focus();
}

// ---------- loading ----------
async function loadHosts() {
  const body = await getJson('/api/v1/hosts');
  state.hosts = body.hosts || [];
  const intervals = state.hosts.map((x) => x.interval_ms).filter((x) => x > 0);
  const iv = intervals.length ? Math.min(...intervals) : 10000;
  state.refreshMs = Math.min(10000, Math.max(1000, iv));
}

// What fires, in one line under the active alarms: the cpu share basis, the built-in cores
// rule and the forecast warm-up (loaded once; best effort).
async function loadRules() {
  try {
    const r = await getJson('/api/v1/rules');
    const d = r.defaults || {};
    const cores = (r.rules || []).find((x) => x.metric === 'cores' && x.host === '*' && x.process === '*');
    const min = Math.round((d.warmup_ms ?? d.window_ms ?? 600000) / 60000);
    let text = `RED above ${d.threshold}% cpu or mem (cpu is a share of the whole host: one busy core of N is 100/N %)`;
    if (cores) text += `, or above ${cores.threshold} cores for any process (a process saturating a core)`;
    text += `. Forecasts (AMBER) warm up: each series needs up to ${min} min of samples (the longest of its metrics' trend windows) before AMBER can fire.`;
    $('#rules').textContent = text;
  } catch (e) {
    // An older server or no rights: the line stays empty.
  }
}

// Per series: how many forecasts are still warming up (GET /api/v1/forecasts; best effort,
// every refresh). Empty once every forecast is ready.
async function loadForecasts() {
  try {
    const f = await getJson('/api/v1/forecasts');
    const n = f.warming_up || 0;
    $('#forecasts').textContent = n > 0
      ? `Forecast warming up for ${n} series: first ready in ${Math.ceil((f.first_ready_in_ms || 0) / 60000)} min (until then only RED fires for them).`
      : '';
  } catch (e) {
    // An older server or no rights: the line stays empty.
  }
}

// The server sorts, filters and cuts (a fleet has 300k rows: only one page comes to the
// browser); the page re-sorts and filters what it holds at once on a click, then asks again.
const SERVER_SORT = {
  host: 'host', process: 'process', level: 'cpu.mean', cpu_mean: 'cpu.mean', cpu_last: 'cpu.last',
  cores: 'cores.last', mem_mean: 'mem.mean', mem_last: 'mem.last', rss: 'rss.last', count: 'count',
};
const ALL_ROWS = 1000; // "top all": at most this many rows a page

async function loadUsage() {
  const q = new URLSearchParams({
    window: state.window,
    per_host: 'true',
    sort: SERVER_SORT[state.sort.key] || 'cpu.mean',
    order: state.sort.desc ? 'desc' : 'asc',
    limit: String(state.top > 0 ? state.top : ALL_ROWS),
  });
  if (state.hostFilter) q.set('host', state.hostFilter);
  if (state.textFilter) q.set('process', `*${state.textFilter}*`);
  const body = await getJson(`/api/v1/usage?${q}`);
  state.rows = body.rows || [];
  state.more = !!body.next;
}

// Asks the server again after a change of sort, filter or top (debounced for typing).
let reloadTimer = null;
function reloadUsage() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(async () => {
    try {
      await loadUsage();
      renderTable();
    } catch (e) {
      if (e instanceof AuthError) needAuth();
    }
  }, 250);
}

function alarmList(body) {
  if (Array.isArray(body)) return body;
  return body.alarms || body.events || body.items || [];
}

async function loadAlarms() {
  try {
    const active = alarmList(await getJson('/api/v1/alarms?active=true'));
    state.active = new Map();
    for (const e of active) {
      if (e.end == null && e.level !== 'OK') upsertActive(e);
    }
    state.history = alarmList(await getJson('/api/v1/alarms?limit=50'));
    state.alarmsAvailable = true;
  } catch (e) {
    if (e instanceof NotFound) {
      state.alarmsAvailable = false;
      state.active = new Map();
      state.history = [];
    } else {
      throw e;
    }
  }
}

function upsertActive(e) {
  const k = alarmKey(e);
  const old = state.active.get(k);
  if (!old || LEVEL_RANK[e.level] >= LEVEL_RANK[old.level] || old.id === e.id) state.active.set(k, e);
}

function applyEvent(e) {
  const k = alarmKey(e);
  if (e.end != null || e.level === 'OK') {
    const cur = state.active.get(k);
    if (cur && (cur.id === e.id || e.level === 'OK')) state.active.delete(k);
  } else {
    state.active.set(k, e);
  }
  state.history = [e, ...state.history.filter((x) => x.id !== e.id)].slice(0, 50);
  renderAlarms();
  renderTable();
  renderHistory();
}

// ---------- live stream (SSE over fetch) ----------
function setLive(kind, text) {
  const el = $('#live');
  el.className = `live ${kind}`;
  el.textContent = text;
}

async function stream() {
  for (;;) {
    if (state.authNeeded || state.alarmsAvailable === false) {
      await sleep(5000);
      continue;
    }
    try {
      const r = await api('/api/v1/alarms/stream', { headers: { ...headers(), Accept: 'text/event-stream' } });
      state.streamUp = true;
      setLive('on', 'live');
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (data.length) dispatch(data.join('\n'));
            data = [];
          } else if (line.startsWith('data:')) {
            data.push(line.slice(5).replace(/^ /, ''));
          }
        }
      }
    } catch (e) {
      if (e instanceof AuthError) needAuth();
      if (e instanceof NotFound) state.alarmsAvailable = false;
    }
    state.streamUp = false;
    setLive('poll', 'polling');
    await sleep(3000);
  }
}

function dispatch(text) {
  let e;
  try { e = JSON.parse(text); } catch (_) { return; }
  if (e && e.host !== undefined && e.level) {
    applyEvent(e);
    // Reconcile with the server soon after (the event may close another).
    loadAlarms().then(() => { renderAlarms(); renderTable(); renderHistory(); }).catch(() => {});
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- rendering ----------
function badge(level) {
  return h('span', { class: `badge ${level.toLowerCase()}`, text: level });
}

function renderAlarms() {
  const box = $('#alarms');
  box.replaceChildren();
  if (state.alarmsAvailable === false) {
    box.append(h('span', { class: 'muted', id: 'alarms-unavailable', text: 'alarms unavailable (this server has no alarm service)' }));
    return;
  }
  const list = [...state.active.values()].sort((a, b) => LEVEL_RANK[b.level] - LEVEL_RANK[a.level] || b.start - a.start);
  if (!list.length) {
    box.append(h('span', { class: 'muted', text: state.alarmsAvailable ? 'No active alarms.' : 'loading…' }));
    return;
  }
  for (const e of list) {
    const what = e.kind === 'host_silent' ? 'host silent' : `${e.process} ${e.metric}`;
    const detail = e.level === 'AMBER' && Number.isFinite(e.forecast)
      ? `forecast ${num(e.forecast)} > ${num(e.threshold, 0)}${Number.isFinite(e.eta_seconds) ? ` in ${Math.round(e.eta_seconds / 60)} min` : ''}`
      : `${num(e.value)} > ${num(e.threshold, 0)}`;
    box.append(h('div', {
      class: `alarm ${e.level.toLowerCase()}`,
      'data-level': e.level,
      'data-host': e.host,
      'data-process': e.process,
      title: `since ${clock(e.start)}, peak ${num(e.peak)}`,
      onclick: () => { if (e.process) select(e.host, e.process); },
    }, badge(e.level), h('strong', { text: e.host }), what, h('span', { class: 'muted', text: detail })));
  }
}

function meter(label, v) {
  const pct = Number.isFinite(v) ? Math.max(0, Math.min(100, v)) : 0;
  return h('div', { class: 'meter' },
    h('span', { class: 'muted', text: label }),
    h('div', { class: 'track' }, h('div', { class: `fill${pct >= 80 ? ' hot' : ''}`, style: `width:${pct}%` })),
    h('span', { class: 'v', text: Number.isFinite(v) ? `${num(v)} %` : '–' }));
}

function renderHosts() {
  const box = $('#hosts');
  box.replaceChildren();
  if (!state.hosts.length) {
    box.append(h('span', { class: 'muted', text: 'No host has reported yet. Start an agent: procwatch agent --server URL' }));
  }
  for (const x of state.hosts) {
    const latest = x.latest || {};
    box.append(h('div', {
      class: `host${state.hostFilter === x.host ? ' selected' : ''}`,
      'data-host': x.host,
      title: 'show only this host',
      onclick: () => { state.hostFilter = state.hostFilter === x.host ? '' : x.host; $('#host-filter').value = state.hostFilter; renderHosts(); renderTable(); reloadUsage(); },
    },
    h('div', { class: 'name' }, h('span', { text: x.host }), x.stale ? badge('STALE') : null),
    h('div', { class: 'seen', text: `last seen ${ago(x.age_ms)}${x.interval_ms ? ` · every ${num(x.interval_ms / 1000, x.interval_ms < 1000 ? 1 : 0)} s` : ''}` }),
    x.folded ? h('div', { class: 'seen folded', title: 'the cardinality governor folds the long tail into one series', text: `other (${x.folded} processes)` }) : null,
    meter('cpu', latest.cpu),
    meter('mem', latest.mem)));
  }
  // host filter options
  const sel = $('#host-filter');
  const want = ['', ...state.hosts.map((x) => x.host)];
  const have = [...sel.options].map((o) => o.value);
  if (want.join('\u0000') !== have.join('\u0000')) {
    sel.replaceChildren(...want.map((v) => h('option', { value: v, text: v || 'all' })));
    sel.value = state.hostFilter;
  }
}

function rowLevel(r) {
  let best = 'OK';
  for (const m of ['cpu', 'mem']) {
    const e = state.active.get(`${r.host}\u0000${r.process}\u0000${m}`);
    if (e && LEVEL_RANK[e.level] > LEVEL_RANK[best]) best = e.level;
  }
  return best;
}

const SORT_KEYS = {
  host: (r) => r.host || '',
  process: (r) => r.process,
  level: (r) => LEVEL_RANK[rowLevel(r)],
  cpu_mean: (r) => r.cpu.mean,
  cpu_last: (r) => r.cpu.last,
  cores: (r) => r.cores.last,
  mem_mean: (r) => r.mem.mean,
  mem_last: (r) => r.mem.last,
  rss: (r) => r.rss.last,
  count: (r) => r.count,
};

function visibleRows() {
  const f = state.textFilter.toLowerCase();
  let rows = state.rows.filter((r) => (!state.hostFilter || r.host === state.hostFilter) && (!f || r.process.toLowerCase().includes(f)));
  const key = SORT_KEYS[state.sort.key];
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const c = typeof x === 'string' ? x.localeCompare(y) : x - y;
    return (state.sort.desc ? -c : c) || a.process.localeCompare(b.process);
  });
  const total = rows.length;
  if (state.top > 0) rows = rows.slice(0, state.top);
  return { rows, total };
}

function renderTable() {
  const { rows, total } = visibleRows();
  const maxCpu = Math.max(1, ...rows.map((r) => r.cpu.mean));
  const tbody = $('#procs tbody');
  tbody.replaceChildren(...rows.map((r) => {
    const level = rowLevel(r);
    const sel = state.selected && state.selected.host === r.host && state.selected.process === r.process;
    return h('tr', {
      class: sel ? 'selected' : '',
      'data-host': r.host,
      'data-process': r.process,
      'data-level': level,
      onclick: () => select(r.host, r.process),
    },
    h('td', { class: 'opt', text: r.host }),
    h('td', { class: 'proc', title: r.other ? `${r.count} processes folded by the governor on ${r.host}` : `${r.process} on ${r.host}`, text: r.other ? `other (${r.count} processes)` : r.process }),
    h('td', {}, level === 'OK' ? h('span', { class: 'muted', text: 'ok' }) : badge(level)),
    h('td', { class: 'num' }, h('span', { class: 'cell-bar', style: `width:${Math.round(28 * r.cpu.mean / maxCpu)}px` }), num(r.cpu.mean)),
    h('td', { class: 'num opt', text: num(r.cpu.last) }),
    h('td', { class: 'num opt', text: num(r.cores.last, 2) }),
    h('td', { class: 'num', text: num(r.mem.mean) }),
    h('td', { class: 'num opt', text: num(r.mem.last) }),
    h('td', { class: 'num opt', text: bytes(r.rss.last) }),
    h('td', { class: 'num opt', text: r.count }));
  }));
  if (!rows.length) {
    tbody.append(h('tr', {}, h('td', { colspan: 10, class: 'muted', text: state.rows.length ? 'No process matches the filter.' : `No samples in the last ${state.window}.` })));
  }
  $('#row-count').textContent = `${rows.length} of ${total}${state.more ? '+' : ''}`;
  for (const th of document.querySelectorAll('#procs th.sortable')) {
    const on = th.dataset.key === state.sort.key;
    th.classList.toggle('sorted', on);
    th.classList.toggle('desc', on && state.sort.desc);
    th.classList.toggle('asc', on && !state.sort.desc);
    th.setAttribute('aria-sort', on ? (state.sort.desc ? 'descending' : 'ascending') : 'none');
  }
}

function renderHistory() {
  const tbody = $('#alarm-history tbody');
  if (state.alarmsAvailable === false) {
    tbody.replaceChildren(h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'alarms unavailable' })));
    return;
  }
  if (!state.history.length) {
    tbody.replaceChildren(h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No alarm so far.' })));
    return;
  }
  tbody.replaceChildren(...state.history.map((e) => h('tr', { onclick: () => { if (e.process) select(e.host, e.process); } },
    h('td', {}, badge(e.level)),
    h('td', { text: e.host }),
    h('td', { class: 'proc', text: e.kind === 'host_silent' ? '(host silent)' : e.process }),
    h('td', { text: e.metric }),
    h('td', { class: 'num', text: num(e.peak) }),
    h('td', { class: 'num', text: num(e.threshold, 0) }),
    h('td', { text: clock(e.start) }),
    h('td', { text: e.end == null ? 'active' : clock(e.end) }))));
}

// ---------- charts ----------
const darkQuery = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;

function select(host, process) {
  state.selected = { host, process };
  $('#detail').hidden = false;
  renderTable();
  loadCharts(true);
}

async function loadChart(metric) {
  const fig = $(`#chart-${metric}`);
  const { host, process } = state.selected;
  const alarm = state.active.get(`${host}\u0000${process}\u0000${metric}`);
  const width = Math.max(320, Math.min(1200, Math.round(fig.clientWidth || 600)));
  const q = new URLSearchParams({
    metric,
    window: state.chartWindow,
    theme: darkQuery && darkQuery.matches ? 'dark' : 'light',
    width: String(width),
    height: String(width < 480 ? 220 : 260),
  });
  if (alarm && Number.isFinite(alarm.threshold)) q.set('threshold', String(alarm.threshold));
  const path = `/api/v1/hosts/${encodeURIComponent(host)}/processes/${encodeURIComponent(process)}/chart.svg?${q}`;
  try {
    const text = await (await api(path)).text();
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    const svg = doc.documentElement;
    if (svg.nodeName !== 'svg') throw new Error('not an SVG');
    svg.removeAttribute('width');
    svg.removeAttribute('height');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `${metric} history of ${process} on ${host}`);
    fig.replaceChildren(document.importNode(svg, true));
    fig.dataset.metric = metric;
    fig.dataset.points = String(svg.querySelectorAll('circle').length);
  } catch (e) {
    if (e instanceof AuthError) needAuth();
    fig.replaceChildren(h('p', { class: 'muted', text: e instanceof NotFound ? 'no history for this process' : `chart failed: ${e.message}` }));
  }
}

function loadCharts(force) {
  if (!state.selected) return;
  const now = Date.now();
  if (!force && now - state.lastChart < Math.max(5000, state.refreshMs)) return;
  state.lastChart = now;
  $('#detail-title').textContent = `History — ${state.selected.process} on ${state.selected.host}`;
  loadChart('cpu');
  loadChart('mem');
  loadExtras();
}

// ---------- extra metrics (issue 19) ----------
// The newest opt-in extras of the selected process (io, fds, threads, ctxsw, owner, unit),
// from its history's `extras`; nothing is shown when the agent collects none.
const EXTRA_LABELS = [
  ['read_bps', 'disk read', (v) => `${bytes(v)}/s`],
  ['write_bps', 'disk write', (v) => `${bytes(v)}/s`],
  ['fds', 'open fds', (v) => String(Math.round(v))],
  ['fds_pct', 'fds of limit', (v) => `${num(v)} %`],
  ['threads', 'threads', (v) => String(Math.round(v))],
  ['ctxsw_vol', 'voluntary switches', (v) => `${num(v)}/s`],
  ['ctxsw_invol', 'involuntary switches', (v) => `${num(v)}/s`],
  ['owner', 'owner', String],
  ['unit', 'unit', String],
];

function bytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function loadExtras() {
  let box = document.getElementById('detail-extras');
  if (!box) {
    box = h('dl', { id: 'detail-extras', class: 'extras' });
    $('#detail').appendChild(box);
  }
  const { host, process } = state.selected;
  const path = `/api/v1/hosts/${encodeURIComponent(host)}/processes/${encodeURIComponent(process)}/history?from=now-5m`;
  let last = null;
  try {
    const extras = (await (await api(path)).json()).extras || [];
    last = extras[extras.length - 1] || null;
  } catch (e) {
    if (e instanceof AuthError) needAuth();
  }
  box.hidden = !last;
  if (!last) { box.replaceChildren(); return; }
  const items = EXTRA_LABELS.filter(([k]) => last[k] !== undefined && last[k] !== null)
    .flatMap(([k, label, fmt]) => [h('dt', { text: label }), h('dd', { text: fmt(last[k]) })]);
  box.replaceChildren(...items);
}

// ---------- the loop ----------
async function refresh() {
  clearTimeout(state.timer);
  if (state.authNeeded) return;
  try {
    if (!state.rulesLoaded) {
      state.rulesLoaded = true;
      loadRules();
    }
    loadForecasts();
    await Promise.all([loadHosts(), loadUsage(), loadAlarms()]);
    showError('');
    if (!state.streamUp) setLive(state.alarmsAvailable === false ? 'poll' : 'poll', 'polling');
    renderHosts();
    renderAlarms();
    renderTable();
    renderHistory();
    if (!state.selected && state.rows.length) {
      const first = visibleRows().rows[0];
      if (first) select(first.host, first.process);
    } else {
      loadCharts(false);
    }
    if (!document.body.dataset.loaded) {
      document.body.dataset.loaded = 'true';
      // First render with data: read by the benchmark (BENCHMARKS.md, Dashboard).
      if (performance.mark) performance.mark('procwatch-first-data');
    }
  } catch (e) {
    if (e instanceof AuthError) { needAuth(); return; }
    showError(`Cannot reach the server: ${e.message}`);
    setLive('off', 'offline');
  }
  state.timer = setTimeout(refresh, state.refreshMs);
}

function init() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  state.token = localStorage.getItem(TOKEN_KEY);

  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('#token-input').value.trim() || null;
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
    else localStorage.removeItem(TOKEN_KEY);
    state.authNeeded = false;
    $('#login').hidden = true;
    refresh();
  });
  $('#token-button').addEventListener('click', () => { $('#login').hidden = !$('#login').hidden; });
  $('#window').addEventListener('change', (ev) => { state.window = ev.target.value; refresh(); });
  $('#chart-window').addEventListener('change', (ev) => { state.chartWindow = ev.target.value; loadCharts(true); });
  $('#host-filter').addEventListener('change', (ev) => { state.hostFilter = ev.target.value; renderHosts(); renderTable(); reloadUsage(); });
  $('#text-filter').addEventListener('input', (ev) => { state.textFilter = ev.target.value; renderTable(); reloadUsage(); });
  $('#top').addEventListener('change', (ev) => { state.top = Number(ev.target.value); renderTable(); reloadUsage(); });
  for (const th of document.querySelectorAll('#procs th.sortable')) {
    th.addEventListener('click', () => {
      const key = th.dataset.key;
      if (state.sort.key === key) state.sort.desc = !state.sort.desc;
      else state.sort = { key, desc: !['host', 'process'].includes(key) };
      renderTable();
      reloadUsage();
    });
  }
  if (darkQuery && darkQuery.addEventListener) darkQuery.addEventListener('change', () => loadCharts(true));
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => loadCharts(true), 300); });
  refresh();
  stream();
}

document.addEventListener('DOMContentLoaded', init);

// ---------- agents (control channel) ----------
// The table of GET /api/v1/agents (read token, like the rest of the page) every 5 s, and the
// directive form: `key=value` words as `procwatch agents set` takes them, posted with the admin
// token typed into the form. That token lives only in the input for the request: it is never
// put in localStorage, the URL or `state`.
const AGENTS_MS = 5000;

function parseDirective(text) {
  const set = {};
  const list = (v) => v.split(',').map((x) => x.trim()).filter((x) => x);
  for (const word of text.trim().split(/\s+/).filter((w) => w)) {
    const at = word.indexOf('=');
    if (at < 1) throw new Error(`${word}: expected key=value`);
    const k = word.slice(0, at);
    const v = word.slice(at + 1);
    if (k === 'interval') set.interval = v;
    else if (k === 'paused') {
      if (!['true', 'false'].includes(v)) throw new Error(`paused=${v}: expected true or false`);
      set.paused = v === 'true';
    } else if (k === 'include' || k === 'exclude' || k === 'metrics') set[k] = list(v);
    else if ((k === 'sweep' || k === 'sweep_now') && (v === 'now' || v === 'true')) set.sweep_now = true;
    else throw new Error(`unknown key ${k}: expected interval, paused, include, exclude, metrics or sweep`);
  }
  return set;
}

function renderAgents(body) {
  const tbody = $('#agents tbody');
  const rows = (body.agents || []).map((a) => {
    let directive = a.steerable ? `v${a.directive_version}` : '–';
    if (a.pending_version) directive += ` → v${a.pending_version}`;
    const state = !a.steerable ? 'not steerable' : a.paused ? 'paused' : 'running';
    const cells = [
      h('td', { text: a.host }),
      h('td', { text: a.agent }),
      h('td', { class: 'num', text: `${num(a.interval_ms / 1000, a.interval_ms % 1000 ? 1 : 0)} s` }),
      h('td', { text: directive }),
      h('td', { text: ago(Date.now() - a.last_seen) }),
      h('td', { class: 'num', text: a.spool_backlog }),
      h('td', { class: 'num', text: a.dropped_samples }),
      h('td', {}, state, a.directive_error
        ? h('div', { class: 'refused', text: `refused v${a.directive_error.version}: ${a.directive_error.message}` })
        : null),
    ];
    return h('tr', {}, ...cells);
  });
  tbody.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'no agent has reported since the server started' }))]));
}

async function loadAgents() {
  if (!state.authNeeded) {
    try {
      renderAgents(await getJson('/api/v1/agents'));
    } catch (e) {
      if (!(e instanceof AuthError)) $('#agents tbody').replaceChildren(h('tr', {}, h('td', { colspan: 8, class: 'muted', text: `agents: ${e.message}` })));
    }
  }
  setTimeout(loadAgents, AGENTS_MS);
}

async function sendDirective(ev) {
  ev.preventDefault();
  const out = $('#directive-result');
  const tokenInput = $('#directive-token');
  try {
    const body = { hosts: $('#directive-hosts').value.trim(), set: parseDirective($('#directive-set').value) };
    const r = await fetch('/api/v1/agents/directives', {
      method: 'POST',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tokenInput.value.trim()}` },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error || `HTTP ${r.status}`);
    out.textContent = `directive v${answer.directive.version} stored; ${answer.matching_agents} agent(s) match`;
    out.className = 'muted';
    loadAgentsOnce();
  } catch (e) {
    out.textContent = e.message;
    out.className = 'refused';
  }
}

async function loadAgentsOnce() {
  try { renderAgents(await getJson('/api/v1/agents')); } catch (_) { /* the poll says why */ }
}

document.addEventListener('DOMContentLoaded', () => {
  $('#directive-form').addEventListener('submit', sendDirective);
  loadAgents();
});
