// The failed-message console. No framework: the page asks /api/ with the admin token (kept in this
// tab's sessionStorage, sent as a header, never in a URL) and renders one page of dead letters at a
// time, so thousands of them cost no more than fifty. Everything a sender sent (payloads, causes) is
// rendered as text, never as HTML.
import { lagSince, parsePrometheus, quantileBound, summarize } from './metrics.js';
import { renderPayload } from './payload.js';

const TOKEN_KEY = 'fhir-rte-admin-token';
const PAGE = 50;
const POLL_MS = 5000;
/** The counts group the whole dead-letter table (about half a second at 200,000 failed ones): every third tick. */
const COUNTS_EVERY = 3;

const $ = (id) => document.getElementById(id);
/** fhir-rte's root, relative to this page, so the console also works behind a proxy that mounts it under a path. */
const ROOT = new URL('../', location.href);
const at = (path) => new URL(path, ROOT);
const state = {
  filter: { status: 'failed' },
  /** Cursors of the pages before this one (keyset paging); the last is this page's. */
  cursors: [undefined],
  nextCursor: null,
  rows: [],
  selected: new Set(),
  classes: new Set(),
  shown: undefined,
  metrics: { previous: undefined, at: 0 },
  poll: undefined,
};

class Refused extends Error {}
class Off extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(at(`api${path}`), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (res.status === 401) throw new Refused(answer.error);
  if (res.status === 404 && /are off/.test(answer.error ?? '')) throw new Off(answer.error);
  if (!res.ok) throw new Error(answer.error ?? `${res.status} ${res.statusText}`);
  return answer;
}

function show(view) {
  for (const id of ['loading', 'off', 'login', 'app']) $(id).hidden = id !== view;
  $('sign-out').hidden = view !== 'app';
  if (view === 'login') $('token').focus();
}

/** Any call may find the token refused or the API off; the page then shows the login or the notice. */
async function guarded(work) {
  try {
    return await work();
  } catch (err) {
    if (err instanceof Refused) {
      sessionStorage.removeItem(TOKEN_KEY);
      stopPolling();
      $('login-error').textContent = `The token was refused (${err.message}).`;
      show('login');
    } else if (err instanceof Off) {
      stopPolling();
      $('off-reason').textContent = err.message;
      show('off');
    } else {
      announce(`Failed: ${err.message}`, true);
    }
    return undefined;
  }
}

function announce(text, isError = false) {
  const el = $('result');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

// ---- start, sign in, sign out ----

async function begin() {
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    // Asked without a token only to learn whether the API is off (then it says how to turn it on).
    const res = await fetch(at('api/dead-letters/counts'));
    const answer = await res.json().catch(() => ({}));
    if (res.status === 404 && /are off/.test(answer.error ?? '')) {
      $('off-reason').textContent = answer.error;
      show('off');
    } else show('login');
    return;
  }
  const ok = await guarded(async () => {
    await refreshCounts();
    return true;
  });
  if (!ok) return;
  show('app');
  await guarded(() => Promise.all([loadPage(), refreshMetrics()]));
  if (!$('app').hidden) startPolling();
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  await begin();
});

$('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  $('detail').hidden = true;
  state.shown = undefined;
  show('login');
});

function startPolling() {
  stopPolling();
  let tick = 0;
  // A tab in the background asks nothing.
  state.poll = setInterval(() => {
    if (document.hidden) return;
    tick++;
    void guarded(() => Promise.all([tick % COUNTS_EVERY ? undefined : refreshCounts(), refreshMetrics()]));
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(state.poll);
}

// ---- counters and causes ----

async function refreshCounts() {
  const counts = await api(`/dead-letters/counts${query({ status: state.filter.status })}`);
  renderCauses(counts);
  state.counts = counts;
  renderCounters();
}

function renderCauses(counts) {
  const byClass = new Map();
  for (const g of counts.groups) {
    const c = byClass.get(g.errorClass) ?? { count: 0, types: [] };
    c.count += g.count;
    c.types.push(`${g.resourceType ?? '(no type)'} ${g.count}`);
    byClass.set(g.errorClass, c);
    state.classes.add(g.errorClass);
  }
  const list = $('cause-list');
  const items = [...byClass].map(([cls, c]) => {
    const li = el('li');
    const button = el('button', { type: 'button', className: 'cause-button' });
    button.append(el('strong', { textContent: cls }), ` ${c.count}`);
    button.setAttribute('aria-pressed', String(state.filter.class === cls));
    button.addEventListener('click', () => applyFilter({ ...state.filter, class: state.filter.class === cls ? undefined : cls }));
    li.append(button, el('span', { className: 'types', textContent: c.types.join(' · ') }));
    return li;
  });
  if (!items.length) items.push(el('li', { className: 'note', textContent: `No ${state.filter.status === 'all' ? '' : `${state.filter.status} `}dead letters.` }));
  list.replaceChildren(...items);
  fillClassOptions();
}

function fillClassOptions() {
  const select = document.querySelector('#filters select[name=class]');
  const current = state.filter.class ?? '';
  const names = [...new Set([...state.classes, ...(current ? [current] : [])])].sort();
  select.replaceChildren(el('option', { value: '', textContent: 'any' }), ...names.map((n) => el('option', { value: n, textContent: n })));
  select.value = current;
}

async function refreshMetrics() {
  let res;
  try {
    res = await fetch(at('metrics'), { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` } });
  } catch (err) {
    res = { ok: false, status: err.message };
  }
  if (!res.ok) {
    state.metrics.summary = undefined;
    $('metrics-note').textContent = `Metrics unavailable (/metrics answered ${res.status}): the counts shown are from the dead-letter table only.`;
  } else {
    const summary = summarize(parsePrometheus(await res.text()));
    const recent = lagSince(state.metrics.previous?.lag, summary.lag);
    state.metrics = { previous: summary, summary, recent, before: state.metrics.summary, at: Date.now(), lastAt: state.metrics.at };
    $('metrics-note').textContent = summary.events ? `From /metrics, every ${POLL_MS / 1000} s.` : '/metrics has no fhir-rte event counters yet.';
  }
  renderCounters();
}

function renderCounters() {
  const dl = $('counters');
  const entries = [];
  const counts = state.counts;
  if (counts) {
    entries.push(['Failed dead letters', counts.byStatus.failed], ['Retried', counts.byStatus.retried], ['Discarded', counts.byStatus.discarded]);
  }
  const { summary, before, at: readAt, lastAt, recent } = state.metrics;
  if (summary?.events) {
    const elapsed = before?.events && lastAt ? (readAt - lastAt) / 1000 : 0;
    const rate = (k) => (elapsed > 0 ? ` (${fmt(Math.max(0, summary.events[k] - before.events[k]) / elapsed)}/s)` : '');
    entries.push(
      ['Events received', `${fmt(summary.events.received)}${rate('received')}`],
      ['Applied', `${fmt(summary.events.applied)}${rate('applied')}`],
      ['Stale', fmt(summary.events.stale)],
      ['Skipped', fmt(summary.events.skipped)],
      ['Dead-lettered', `${fmt(summary.events.dead_lettered)}${rate('dead_lettered')}`],
    );
  }
  if (summary && summary.lag.count) {
    // The events committed since the last reading; when there were none, all since fhir-rte started.
    const fresh = recent && recent.count && recent !== summary.lag;
    const window = fresh ? recent : summary.lag;
    const over = fresh ? `last ${POLL_MS / 1000} s` : 'since start';
    const p95 = quantileBound(window, 0.95);
    entries.push([`Lag, mean (${over})`, seconds(window.sum / window.count)], [`Lag, p95 ≤ (${over})`, p95 === Infinity ? 'above the largest bucket' : seconds(p95)]);
  }
  if (summary?.kafka) entries.push(['Kafka lag', `${fmt(summary.kafka.total)} records (max ${fmt(summary.kafka.max)} on one partition)`]);
  dl.replaceChildren(
    ...entries.map(([k, v]) => {
      const pair = el('div');
      pair.append(el('dt', { textContent: k }), el('dd', { textContent: typeof v === 'number' ? fmt(v) : v }));
      return pair;
    }),
  );
}

const fmt = (n) => (Number.isInteger(n) ? n.toLocaleString('en') : n.toLocaleString('en', { maximumFractionDigits: 1 }));
const seconds = (s) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 0)} s`);

// ---- the list ----

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function loadPage() {
  const cursor = state.cursors[state.cursors.length - 1];
  const page = await api(`/dead-letters${query({ ...state.filter, cursor, limit: PAGE })}`);
  state.rows = page.items;
  state.nextCursor = page.nextCursor;
  state.selected.clear();
  renderRows();
}

function renderRows() {
  const fragment = document.createDocumentFragment();
  for (const r of state.rows) fragment.append(rowOf(r));
  $('rows').replaceChildren(fragment);
  $('empty').hidden = state.rows.length > 0;
  const first = (state.cursors.length - 1) * PAGE + 1;
  $('page-info').textContent = state.rows.length ? `${first}–${first + state.rows.length - 1}` : '';
  $('newer').disabled = state.cursors.length <= 1;
  $('older').disabled = !state.nextCursor;
  $('select-all').checked = false;
  selectionChanged();
}

function rowOf(r) {
  const tr = el('tr', { className: r.status });
  tr.dataset.id = String(r.id);
  const box = el('input', { type: 'checkbox' });
  box.setAttribute('aria-label', `Select dead letter ${r.id}`);
  box.checked = state.selected.has(r.id);
  box.addEventListener('change', () => {
    if (box.checked) state.selected.add(r.id);
    else state.selected.delete(r.id);
    selectionChanged();
  });
  const open = el('button', { type: 'button', className: 'link', textContent: String(r.id) });
  open.setAttribute('aria-label', `Show dead letter ${r.id}`);
  open.addEventListener('click', () => {
    state.opener = open;
    void guarded(() => showDetail(r.id));
  });
  const cause = el('td', { className: 'cause-cell' });
  cause.append(el('strong', { textContent: r.errorClass }), el('span', { textContent: ` ${oneLine(r.errorMessage, 160)}` }));
  tr.append(
    cell(box),
    cell(open),
    el('td', { textContent: when(r.createdAt) }),
    el('td', { textContent: resourceOf(r) }),
    cause,
    el('td', { className: 'source', textContent: r.source }),
    el('td', { textContent: String(r.attempts) }),
    el('td', { textContent: r.status }),
  );
  return tr;
}

function selectionChanged() {
  const n = state.selected.size;
  $('retry-selected').disabled = n === 0;
  $('discard-selected').disabled = n === 0;
  $('retry-selected').textContent = n ? `Retry ${n} selected` : 'Retry selected';
  $('discard-selected').textContent = n ? `Discard ${n} selected` : 'Discard selected';
}

$('select-all').addEventListener('change', () => {
  const on = $('select-all').checked;
  for (const r of state.rows) (on ? state.selected.add(r.id) : state.selected.delete(r.id));
  for (const box of $('rows').querySelectorAll('input[type=checkbox]')) box.checked = on;
  selectionChanged();
});

$('older').addEventListener('click', () => {
  state.cursors.push(state.nextCursor);
  void guarded(loadPage);
});
$('newer').addEventListener('click', () => {
  state.cursors.pop();
  void guarded(loadPage);
});
$('refresh').addEventListener('click', () => void guarded(refreshAll));

// ---- filters ----

$('filters').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = new FormData($('filters'));
  const text = (k) => String(form.get(k) ?? '').trim() || undefined;
  applyFilter({
    status: text('status') ?? 'failed',
    class: text('class'),
    type: text('type'),
    id: text('id'),
    source: text('source'),
    q: text('q'),
    since: isoOf(text('since')),
    until: isoOf(text('until')),
  });
});
$('filters').addEventListener('reset', () => setTimeout(() => applyFilter({ status: 'failed' })));

function applyFilter(filter) {
  state.filter = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined));
  const form = $('filters');
  for (const name of ['status', 'type', 'id', 'source', 'q']) form.elements[name].value = state.filter[name] ?? (name === 'status' ? 'failed' : '');
  state.cursors = [undefined];
  void guarded(refreshAll);
}

/** datetime-local gives local time without a zone; the API takes an instant. */
const isoOf = (local) => (local ? new Date(local).toISOString() : undefined);

async function refreshAll() {
  await Promise.all([loadPage(), refreshCounts()]);
}

// ---- actions ----

/** The filter without its status: bulk actions act on failed dead letters only. */
function bulkFilter() {
  const { status: _, ...rest } = state.filter;
  return rest;
}

function retried(summary) {
  const reloaded = summary.transformersReloaded ? ' (transformers reloaded from disk first)' : '';
  return `Retried ${summary.selected}: ${summary.retried} now applied or stale, ${summary.stillFailing} still failing${reloaded}.`;
}

/**
 * Runs an action with the action buttons disabled, then refreshes the list and counts; the result is
 * announced last, so when it is read out the page already shows what it did.
 */
async function act(busyText, work) {
  announce(busyText);
  setBusy(true);
  let text;
  try {
    text = await guarded(work);
    await guarded(refreshAll);
  } finally {
    setBusy(false);
  }
  if (text) announce(text);
}

function setBusy(busy) {
  for (const b of document.querySelectorAll('.actions button:not(#detail-close)')) b.disabled = busy;
  if (busy) return;
  selectionChanged();
  detailButtons();
}

$('retry-selected').addEventListener('click', () =>
  act('Retrying…', async () => retried(await api('/dead-letters/retry', { method: 'POST', body: { ids: [...state.selected] } }))),
);
$('discard-selected').addEventListener('click', () =>
  act('Discarding…', async () => `Discarded ${(await api('/dead-letters/discard', { method: 'POST', body: { ids: [...state.selected] } })).discarded}.`),
);
$('retry-matching').addEventListener('click', () => bulk('retry'));
$('discard-matching').addEventListener('click', () => bulk('discard'));
$('reload-transformers').addEventListener('click', () =>
  act('Reloading transformers…', async () => `Transformers reloaded from disk: ${(await api('/transformers/reload', { method: 'POST' })).transformers} in use.`),
);

async function bulk(action) {
  const counts = await guarded(() => api(`/dead-letters/counts${query({ ...bulkFilter(), status: 'failed' })}`));
  if (!counts) return;
  const n = counts.byStatus.failed;
  if (!n) return announce('No failed dead letters match the filter.');
  if (!confirm(`${action === 'retry' ? 'Retry' : 'Discard'} all ${n} failed dead letter(s) matching the filter?`)) return;
  await act(action === 'retry' ? `Retrying ${n}…` : `Discarding ${n}…`, async () => {
    const answer = await api(`/dead-letters/${action}`, { method: 'POST', body: { filter: bulkFilter() } });
    return action === 'retry' ? retried(answer) : `Discarded ${answer.discarded}.`;
  });
}

// ---- one dead letter: cause beside payload ----

async function showDetail(id) {
  const d = await api(`/dead-letters/${id}`);
  state.shown = d;
  $('detail-title').textContent = `Dead letter ${d.id} (${d.status})`;
  const cause = [
    ['Cause', d.errorClass],
    ['Message', d.errorMessage],
    ['Resource', `${resourceOf(d)} (${d.operation})`],
    ['Source', d.source],
    ['Created', when(d.createdAt)],
    ['Updated', when(d.updatedAt)],
    ['Attempts', String(d.attempts)],
  ];
  const dl = $('detail-cause');
  dl.replaceChildren(...cause.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })]));
  if (d.errorDetail) dl.append(el('dt', { textContent: 'Detail' }), withChild(el('dd'), el('pre', { textContent: JSON.stringify(d.errorDetail, null, 2) })));
  $('detail-payload').replaceChildren(renderPayload(d.payload));
  detailButtons();
  $('detail').hidden = false;
  $('detail').focus();
}

/** Only a failed dead letter can be retried or discarded. */
function detailButtons() {
  const failed = state.shown?.status === 'failed';
  $('detail-retry').disabled = !failed;
  $('detail-discard').disabled = !failed;
}

$('detail-close').addEventListener('click', () => {
  $('detail').hidden = true;
  state.shown = undefined;
  // Back to where the operator was, if that row is still listed.
  if (state.opener?.isConnected) state.opener.focus();
});
$('detail-retry').addEventListener('click', () =>
  act('Retrying…', async () => {
    const text = retried(await api(`/dead-letters/${state.shown.id}/retry`, { method: 'POST' }));
    await showDetail(state.shown.id);
    return text;
  }),
);
$('detail-discard').addEventListener('click', () =>
  act('Discarding…', async () => {
    await api(`/dead-letters/${state.shown.id}/discard`, { method: 'POST' });
    const text = `Discarded dead letter ${state.shown.id}.`;
    await showDetail(state.shown.id);
    return text;
  }),
);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && !$('detail').hidden) $('detail-close').click();
});

// ---- small helpers ----

function el(tag, props = {}) {
  return Object.assign(document.createElement(tag), props);
}
function cell(child) {
  return withChild(el('td'), child);
}
function withChild(parent, child) {
  parent.append(child);
  return parent;
}
function resourceOf(r) {
  if (!r.resourceType) return '(unknown)';
  return `${r.resourceType}/${r.resourceId ?? '?'}${r.versionId ? ` v${r.versionId}` : ''}`;
}
function when(iso) {
  const d = new Date(iso);
  return `${d.toLocaleDateString('sv')} ${d.toLocaleTimeString('sv')}`;
}
function oneLine(s, max) {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

void begin();
