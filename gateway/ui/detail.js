// One query: what it is, where it ran, its phases on a timeline, and Cancel while it runs.
// Polled every second until it ends.

import { getJson, request } from './api.js';
import { badge, bytes, count, el, hostPort, millis, stateOf, time } from './format.js';
import { poll, showStatus } from './poll.js';

const INTERVAL_MS = 1000;

/** The phases as spans from the request's arrival, in milliseconds. */
export function phases(record) {
  const p = record.phases;
  const end = p.total_ms ?? record.elapsed_ms;
  const spans = [
    ['queued', 0, p.admitted_ms],
    ['planned', p.admitted_ms, p.planned_ms],
    ['first byte', p.planned_ms, p.first_byte_ms],
    ['streamed', p.first_byte_ms, p.total_ms],
  ];
  return spans.map(([name, from, to]) => ({ name, from, to, end }));
}

function timeline(record) {
  const rows = phases(record).flatMap(({ name, from, to, end }) => {
    const track = el('div', { class: 'track' });
    if (from !== null && from !== undefined && to !== null && to !== undefined && end > 0) {
      const span = el('div', { class: 'span' });
      span.style.left = `${(from / end) * 100}%`;
      span.style.width = `${(Math.max(0, to - from) / end) * 100}%`;
      track.append(span);
    }
    const took = to !== null && to !== undefined && from !== null && from !== undefined ? millis(to - from) : '–';
    return [el('div', {}, name), track, el('div', { class: 'num' }, took)];
  });
  return el('div', { class: 'timeline', 'data-timeline': '' }, rows);
}

function fields(record) {
  const pairs = [
    ['Query id', el('code', {}, record.query_id)],
    ['Trace id', el('code', {}, record.trace_id)],
    ['Tenant', record.tenant],
    ['Started', time(record.started_unix_ms)],
    ['Duration', millis(record.elapsed_ms)],
    ['Shard', hostPort(record.shard)],
    // No TaskManager once planned: the shard answered itself (the catalog).
    ['Result from', record.taskmanager || record.phases?.planned_ms == null ? hostPort(record.taskmanager) : 'the shard'],
    ['Stages on', (record.taskmanagers ?? []).map(hostPort).join(', ') || '–'],
    // hit: served from a TaskManager's memory; miss: run and kept; bypass; uncachable.
    ['Result cache', record.cache ? [record.cache.outcome, record.cache.table_versions].filter(Boolean).join(' · ') : '–'],
    ['Attempts', count(record.attempts)],
    ['Rows', count(record.rows)],
    ['Bytes', bytes(record.bytes)],
  ];
  return el('dl', { class: 'fields' }, pairs.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]));
}

export function mount(root, { arg: queryId, settings }) {
  const body = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  root.append(el('h1', {}, 'Query ', el('code', {}, queryId ?? '')), body);
  const cancel = async () => {
    if (!confirm(`Cancel query ${queryId}?`)) return;
    try {
      await request(`/v1/query/${queryId}`, { method: 'DELETE' });
    } catch (error) {
      showStatus(`${error.code}: ${error.message}`);
    }
  };
  const render = (record) => {
    const state = stateOf(record);
    const header = el('div', { class: 'actions' }, badge(state));
    if (state === 'running' && settings.allow_cancel) {
      header.append(el('button', { class: 'danger', 'data-action': 'cancel', onclick: cancel }, 'Cancel'));
    }
    const error = record.code && record.code !== 'ok'
      ? el('p', { class: 'error', 'data-error': record.code }, el('code', {}, record.code), ' ', record.error ?? '')
      : null;
    body.replaceChildren(...[header, error,
      el('div', { class: 'grid' },
        el('div', { class: 'panel' }, fields(record)),
        el('div', { class: 'panel' }, el('h2', {}, 'Timeline'), timeline(record))),
      el('h2', {}, 'SQL'), el('pre', {}, record.sql)].filter(Boolean));
    return state === 'running';
  };
  return poll(async () => {
    try {
      return render(await getJson(`/v1/query/${queryId}`));
    } catch (error) {
      body.replaceChildren(el('p', { class: 'error' }, el('code', {}, error.code), ' ', error.message));
      return error.status !== 404;
    }
  }, INTERVAL_MS);
}
