// imgcache dashboard: polls /dashboard/state.json once a second and redraws. No framework, no inline code
// (the page's Content-Security-Policy allows only these files), data written with textContent only.
'use strict';

const POLL_MS = 1000;
const TOKEN_KEY = 'imgcache-token';
const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n === null || n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

function ago(epochMs, now) {
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === 'class') node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

let names = {};

/** An image id cell: the name when the origin told us one, then the id (always there, for copy and paste). */
function imageCell(id, extraClass) {
  const cell = el('td', { class: `id ${extraClass || ''}`, title: names[id] ? `${names[id]} (${id})` : id });
  if (names[id]) cell.append(el('span', { class: 'name' }, names[id]), ' ');
  cell.append(el('span', { class: names[id] ? 'muted' : '' }, id));
  return cell;
}

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

function fillRows(tbodyParent, emptyId, rows) {
  const tbody = $(tbodyParent).querySelector('tbody');
  tbody.replaceChildren(...rows);
  $(emptyId).hidden = rows.length > 0;
  $(tbodyParent).hidden = rows.length === 0;
}

function renderUsage(usage) {
  const max = Math.max(usage.max, 1);
  const total = usage.used + usage.reserved;
  setText('usage-used', bytes(total));
  setText('usage-max', bytes(usage.max));
  setText('usage-cached', bytes(usage.used));
  setText('usage-reserved', bytes(usage.reserved));
  setText('usage-free', bytes(Math.max(0, usage.max - total)));
  $('usage-bar-used').style.width = `${Math.min(100, (usage.used / max) * 100)}%`;
  $('usage-bar-reserved').style.width = `${Math.min(100, (usage.reserved / max) * 100)}%`;
  $('usage-bar').setAttribute('aria-label', `cache usage ${Math.round((total / max) * 100)}%`);
}

function renderRequests(requests) {
  const all = requests.HIT + requests.MISS + requests.COALESCED + requests.BYPASS;
  setText('hit-ratio', all === 0 ? '–' : `${Math.round((requests.HIT / all) * 100)}%`);
  setText('count-hit', String(requests.HIT));
  setText('count-miss', String(requests.MISS));
  setText('count-coalesced', String(requests.COALESCED));
  setText('count-bypass', String(requests.BYPASS));
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** Stacked bars of bytes per interval by source, and the hit ratio of each interval as a line (0-100%). */
function renderChart(history) {
  const chart = $('chart');
  const width = 600;
  const height = 160;
  const steps = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1];
    const b = history[i];
    const requests = b.hits - a.hits + (b.misses - a.misses);
    steps.push({
      cache: b.cache - a.cache,
      origin: b.origin - a.origin,
      peer: b.peer - a.peer,
      ratio: requests > 0 ? (b.hits - a.hits) / requests : null,
    });
  }
  const slots = Math.max(steps.length, 60);
  const slot = width / slots;
  const peak = Math.max(1, ...steps.map((s) => s.cache + s.origin + s.peer));
  const shapes = [];
  const points = [];
  steps.forEach((step, i) => {
    const x = width - (steps.length - i) * slot;
    let y = height;
    for (const source of ['cache', 'origin', 'peer']) {
      const h = (step[source] / peak) * (height - 8);
      if (h > 0) {
        y -= h;
        shapes.push(svg('rect', { class: source, x: x + 1, y, width: Math.max(1, slot - 2), height: h }));
      }
    }
    if (step.ratio !== null) points.push(`${x + slot / 2},${4 + (1 - step.ratio) * (height - 8)}`);
  });
  if (points.length > 1) shapes.push(svg('polyline', { class: 'ratio', points: points.join(' ') }));
  else if (points.length === 1) {
    const [x, y] = points[0].split(',');
    shapes.push(svg('rect', { class: 'ratio-dot', x: Number(x) - slot / 2 + 1, y: Number(y) - 1.5, width: Math.max(1, slot - 2), height: 3 }));
  }
  chart.replaceChildren(...shapes);
  const first = history[0];
  const last = history[history.length - 1];
  const minutes = first && last ? Math.max(0, Math.round((last.t - first.t) / 60000)) : 0;
  setText('chart-window', minutes > 0 ? `(${minutes} min)` : '(since start)');
  setText('chart-start', first ? new Date(first.t).toLocaleTimeString() : '');
  setText('chart-peak', `peak ${bytes(peak)} per interval`);
}

function renderBytes(last, fills) {
  setText('bytes-total', bytes(last.cache + last.origin + last.peer));
  setText('bytes-cache', bytes(last.cache));
  setText('bytes-origin', bytes(last.origin));
  setText('bytes-peer', bytes(last.peer));
  const prefetch = fills.filter((fill) => fill.prefetch).length;
  setText('fills-running', prefetch > 0 ? `${fills.length} (${prefetch} prefetch)` : String(fills.length));
}

function renderFills(fills) {
  setText('fills-count', String(fills.length));
  const rows = fills.map((fill) => {
    const share = fill.size ? Math.min(100, (fill.received / fill.size) * 100) : 0;
    const meter = el('div', { class: `meter ${fill.source}` }, el('div'));
    meter.firstChild.style.width = `${share}%`;
    const text = `${bytes(fill.received)} / ${bytes(fill.size)}${fill.size ? ` (${Math.floor(share)}%)` : ''}`;
    return el('tr', { 'data-fill': fill.imageId, 'data-received': fill.received },
      imageCell(fill.imageId),
      el('td', { class: 'progress' }, meter, el('span', { class: 'progress-text' }, text)),
      el('td', { class: 'num' }, `${bytes(fill.rate)}/s`),
      el('td', { class: 'num hide-narrow' }, fill.prefetch && fill.consumers === 0 ? 'prefetch' : String(fill.consumers)),
      el('td', { class: 'src hide-narrow' }, el('span', { class: 'tag' }, fill.status === 'BYPASS' ? `${fill.source}, not cached` : fill.source)),
    );
  });
  fillRows('fills', 'fills-empty', rows);
}

function renderCached(cached, now) {
  setText('cached-count', String(cached.total));
  const rows = cached.images.map((image) =>
    el('tr', { 'data-image-id': image.imageId },
      imageCell(image.imageId),
      el('td', { class: 'num size' }, bytes(image.size)),
      el('td', { class: 'num hits' }, String(image.hits)),
      el('td', { class: 'num hide-narrow' }, ago(image.lastAccessed * 1000, now)),
    ),
  );
  fillRows('cached', 'cached-empty', rows);
}

function renderQueue(queued, errors, now) {
  setText('queue-count', String(queued.length));
  const items = queued.map((id) => {
    const failure = errors[id];
    const item = el('li', { class: failure ? 'failed' : '', 'data-queued': id }, el('span', { class: 'id', title: id }, names[id] ? `${names[id]} · ${id}` : id));
    if (failure) {
      item.append(el('span', { class: 'meta' }, `${failure.attempts} attempt${failure.attempts === 1 ? '' : 's'}, retry ${ago(now, failure.next_attempt * 1000).replace(' ago', '')}`));
      item.append(el('span', { class: 'error' }, failure.error));
    }
    return item;
  });
  $('queue').replaceChildren(...items);
  $('queue-empty').hidden = items.length > 0;
}

function renderEvictions(evictions, now) {
  setText('evictions-count', String(evictions.length));
  const items = evictions.slice(0, 20).map((eviction) =>
    el('li', { 'data-evicted': eviction.imageId },
      el('span', { class: 'id', title: eviction.imageId }, eviction.imageId),
      el('span', { class: `tag ${eviction.reason}` }, eviction.reason),
      el('span', { class: 'meta' }, `${bytes(eviction.size)}, ${ago(eviction.at, now)}`),
    ),
  );
  $('evictions').replaceChildren(...items);
  $('evictions-empty').hidden = items.length > 0;
}

function renderNodes(nodes, now) {
  $('nodes-card').hidden = nodes === null;
  if (nodes === null) return;
  setText('nodes-count', String(nodes.length));
  $('nodes').querySelector('tbody').replaceChildren(...nodes.map((node) =>
    el('tr', { 'data-node': node.url },
      el('td', { class: 'id', title: node.url }, node.url),
      el('td', { class: 'num' }, String(node.images)),
      el('td', { class: 'num' }, bytes(node.bytes)),
      el('td', { class: 'num' }, ago(node.lastSeen * 1000, now)),
    )));
}

function render(state) {
  names = state.names || {};
  setText('where', `${state.driver} driver · origin ${state.origin}`);
  renderUsage(state.usage);
  renderRequests(state.requests);
  renderChart(state.history);
  renderBytes(state.history[state.history.length - 1], state.fills);
  renderFills(state.fills);
  renderCached(state.cached, state.time);
  renderQueue(state.queued, state.prefetchErrors, state.time);
  renderEvictions(state.evictions, state.time);
  renderNodes(state.nodes, state.time);
  const live = $('live');
  live.className = 'live ok';
  live.textContent = `live · ${new Date(state.time).toLocaleTimeString()}`;
  document.body.dataset.updated = String(state.time);
}

function showLogin(message) {
  $('main').hidden = true;
  $('login').hidden = false;
  setText('login-error', message);
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  try {
    const response = await fetch('/dashboard/state.json', {
      headers: token ? { 'x-auth-token': token } : {},
      cache: 'no-store',
    });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      showLogin(token ? ((body.error && body.error.message) || `refused (${response.status})`) : '');
      return; // polling resumes when a token is entered
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    $('login').hidden = true;
    $('main').hidden = false;
    render(await response.json());
  } catch (error) {
    const live = $('live');
    live.className = 'live down';
    live.textContent = `no answer (${error.message}) · retrying`;
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    poll();
  });
  poll();
});
