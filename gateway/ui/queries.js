// Queries: running ones first, then the recent ended ones (failures included), filtered and
// sorted in the page; the filters live in the URL (#/queries?state=failed&sort=duration).

import { getJson } from './api.js';
import { badge, bytes, count, el, millis, stateOf, time } from './format.js';
import { poll } from './poll.js';

const INTERVAL_MS = 2000;
const STATES = ['', 'running', 'succeeded', 'failed', 'cancelled'];
const SORTS = {
  start: (record) => record.started_unix_ms,
  duration: (record) => record.elapsed_ms,
  rows: (record) => record.rows,
  bytes: (record) => record.bytes,
};

/** Keeps the records that pass the filters, running first, each group by the chosen key. */
export function select(records, filters) {
  const text = (filters.get('q') ?? '').toLowerCase();
  const wanted = {
    state: filters.get('state') ?? '',
    tenant: filters.get('tenant') ?? '',
    code: filters.get('code') ?? '',
  };
  const key = SORTS[filters.get('sort')] ?? SORTS.start;
  const ascending = filters.get('order') === 'asc';
  return records
    .filter((record) => !wanted.state || stateOf(record) === wanted.state)
    .filter((record) => !wanted.tenant || record.tenant === wanted.tenant)
    .filter((record) => !wanted.code || (record.code ?? '') === wanted.code)
    .filter((record) => !text || record.sql.toLowerCase().includes(text) || record.query_id.includes(text))
    .sort((a, b) => {
      const running = (b.status === 'running') - (a.status === 'running');
      if (running !== 0) return running;
      const order = key(a) - key(b);
      return ascending ? order : -order;
    });
}

function filterBar(params, onChange) {
  const field = (name, label, control) => {
    control.name = name;
    if (params.has(name)) control.value = params.get(name);
    control.addEventListener(control.tagName === 'SELECT' ? 'change' : 'input', onChange);
    return el('label', {}, label, control);
  };
  const options = (values, labels = values) => values.map((value, index) => el('option', { value }, labels[index] || 'all'));
  return el('form', { class: 'filters', onsubmit: (event) => event.preventDefault() },
    field('state', 'State', el('select', {}, options(STATES))),
    field('tenant', 'Tenant', el('input', { placeholder: 'any', size: 10 })),
    field('code', 'Error code', el('input', { placeholder: 'any', size: 14 })),
    field('q', 'SQL or id contains', el('input', { placeholder: 'text', size: 24 })),
    field('sort', 'Sort by', el('select', {}, options(Object.keys(SORTS)))),
    field('order', 'Order', el('select', {}, options(['desc', 'asc'], ['newest / largest first', 'oldest / smallest first']))));
}

function row(record) {
  const state = stateOf(record);
  const open = () => { location.hash = `#/query/${record.query_id}`; };
  return el('tr', { class: 'link', 'data-query': record.query_id, 'data-state': state, onclick: open },
    el('td', {}, badge(state)),
    el('td', {}, time(record.started_unix_ms)),
    el('td', { class: 'num' }, millis(record.elapsed_ms)),
    el('td', {}, record.tenant),
    el('td', { class: 'num' }, count(record.rows)),
    el('td', { class: 'num' }, bytes(record.bytes)),
    el('td', { class: record.code && record.code !== 'ok' ? 'error' : '' }, el('code', {}, record.code ?? '')),
    el('td', { class: 'sql', title: record.sql }, record.sql));
}

export function mount(root, { params }) {
  let records = [];
  const table = el('tbody');
  const summary = el('p', { class: 'muted' }, 'Loading…');
  const render = () => {
    const shown = select(records, params);
    summary.textContent = `${shown.length} of ${records.length} queries this gateway remembers`;
    table.replaceChildren(...shown.map(row));
  };
  const onChange = (event) => {
    const { name, value } = event.target;
    if (value) params.set(name, value);
    else params.delete(name);
    const search = params.toString();
    history.replaceState(null, '', `#/queries${search ? `?${search}` : ''}`);
    render();
  };
  const head = ['State', 'Started', 'Duration', 'Tenant', 'Rows', 'Bytes', 'Code', 'SQL'];
  root.append(el('h1', {}, 'Queries'), filterBar(params, onChange), summary,
    el('table', {}, el('thead', {}, el('tr', {}, head.map((name) => el('th', {}, name)))), table));
  return poll(async () => {
    records = (await getJson('/v1/queries')).queries;
    render();
  }, INTERVAL_MS);
}
