// The SQL console: runs a query as NDJSON, shows up to 1,000 rows (and how many were cut),
// its time, rows and bytes, a link to its record, Cancel while it runs, and downloads as CSV
// or Arrow. What it ran stays when you visit another page. Above the editor, the catalog's
// tables with their format and version (`system.tables`); a click starts a query of one.

import { getJson, newQueryId, request, runQuery } from './api.js';
import { bytes, count, el, millis } from './format.js';
import { showStatus } from './poll.js';

const SHOWN_ROWS = 1000;
const EXAMPLE = 'SELECT r_name, count(*) AS nations\nFROM nation JOIN region ON n_regionkey = r_regionkey\nGROUP BY r_name\nORDER BY r_name';

// One run at a time, kept across page visits; `listener` redraws the mounted page.
const state = { sql: EXAMPLE, run: null };
let listener = null;
const redraw = () => listener?.();

/** Reads an NDJSON body: keeps the first SHOWN_ROWS rows, counts every row and byte. */
async function readRows(response, run, onProgress) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  const take = (line) => {
    if (!line) return;
    run.total += 1;
    if (run.rows.length < SHOWN_ROWS) run.rows.push(JSON.parse(line));
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    run.received += value.byteLength;
    pending += decoder.decode(value, { stream: true });
    const lines = pending.split('\n');
    pending = lines.pop();
    lines.forEach(take);
    onProgress();
  }
  take(pending + decoder.decode());
}

/** Why a run without an API error failed: the gateway unreachable, or a stream cut off. */
async function failure(run, error, answered) {
  if (!answered) return { code: 'unreachable', message: `no answer from the gateway: ${error.message}` };
  // The stream broke after it began: the gateway's record says why.
  try {
    const record = await getJson(`/v1/query/${run.queryId}`);
    return { code: record.code ?? 'stream_aborted', message: record.error ?? error.message };
  } catch {
    return { code: 'stream_aborted', message: String(error.message ?? error) };
  }
}

async function execute(sql) {
  const run = { queryId: newQueryId(), sql, started: performance.now(), rows: [], total: 0, received: 0, error: null, done: false };
  state.run = run;
  redraw();
  let response = null;
  try {
    response = await runQuery(sql, run.queryId, 'application/x-ndjson');
    await readRows(response, run, redraw);
  } catch (error) {
    run.error = error.code ? error : await failure(run, error, response !== null);
  }
  run.elapsed = performance.now() - run.started;
  run.done = true;
  redraw();
}

async function download(run, accept, extension) {
  // Runs the query again in that format: the console keeps only the rows it shows.
  showStatus(`downloading ${extension.toUpperCase()}…`);
  try {
    const blob = await (await runQuery(run.sql, newQueryId(), accept)).blob();
    const link = el('a', { href: URL.createObjectURL(blob), download: `flotilla-result.${extension}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    showStatus('');
  } catch (error) {
    showStatus(`download failed: ${error.code ?? 'error'}: ${error.message}`);
  }
}

function resultTable(run) {
  const columns = run.rows.length ? Object.keys(run.rows[0]) : [];
  const cell = (value) => (value === null || value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value));
  return el('div', { class: 'result' }, el('table', { 'data-result': '' },
    el('thead', {}, el('tr', {}, columns.map((column) => el('th', {}, column)))),
    el('tbody', {}, run.rows.map((row) => el('tr', {}, columns.map((column) => el('td', {}, cell(row[column]))))))));
}

function summary(run, onCancel) {
  const link = el('a', { href: `#/query/${run.queryId}`, 'data-detail': run.queryId }, 'query detail');
  if (!run.done) {
    return el('div', { class: 'actions' }, el('span', { 'data-running': '' }, `running… ${count(run.total)} rows so far`), link,
      el('button', { class: 'secondary', onclick: onCancel }, 'Cancel'));
  }
  const cut = run.total > run.rows.length ? ` (showing the first ${count(run.rows.length)})` : '';
  const parts = [
    el('span', { 'data-summary': '', 'data-query': run.queryId }, `${count(run.total)} rows${cut} · ${bytes(run.received)} received · ${millis(run.elapsed)}`),
    link,
  ];
  if (!run.error) {
    parts.push(el('button', { class: 'secondary', onclick: () => download(run, 'text/csv', 'csv') }, 'Download CSV'),
      el('button', { class: 'secondary', onclick: () => download(run, 'application/vnd.apache.arrow.stream', 'arrows') }, 'Download Arrow'));
  }
  return el('div', { class: 'actions' }, parts);
}

const TABLES_SQL = 'SELECT table_name, format, version, version_of FROM system.tables ORDER BY table_name';

/** The tables line: each table's name, format and (a Delta table's) commit. */
async function listTables(into, onPick) {
  try {
    const tables = await (await runQuery(TABLES_SQL, newQueryId(), 'application/json')).json();
    into.replaceChildren(el('span', { class: 'muted' }, 'Tables:'), ...tables.map((table) => {
      const version = table.version_of === 'commit' && table.version !== null ? ` v${table.version}` : '';
      return el('button', { class: 'secondary', 'data-table': table.table_name, title: `${table.format}${version}`, onclick: () => onPick(table.table_name) },
        table.table_name, el('span', { class: 'muted' }, ` ${table.format}${version}`));
    }));
  } catch (error) {
    into.replaceChildren(el('span', { class: 'muted', 'data-tables-error': error.code ?? 'error' }, `tables unavailable: ${error.message}`));
  }
}

export function mount(root) {
  const editor = el('textarea', { spellcheck: 'false', 'aria-label': 'SQL' });
  editor.value = state.sql;
  const output = el('div');
  const render = () => {
    const run = state.run;
    if (!run) return output.replaceChildren(el('p', { class: 'muted' }, 'Ctrl+Enter runs the query.'));
    const error = run.error
      ? el('p', { class: 'error', 'data-error': run.error.code }, el('code', {}, run.error.code), ' ', run.error.message)
      : null;
    output.replaceChildren(...[summary(run, cancel), error, run.rows.length ? resultTable(run) : null].filter(Boolean));
  };
  const cancel = () => request(`/v1/query/${state.run.queryId}`, { method: 'DELETE' }).catch(() => {});
  const runButton = el('button', { 'data-action': 'run' }, 'Run');
  const start = () => {
    if (state.run && !state.run.done) return;
    state.sql = editor.value;
    execute(state.sql);
  };
  runButton.addEventListener('click', start);
  editor.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      start();
    }
  });
  editor.addEventListener('input', () => { state.sql = editor.value; });
  const tables = el('div', { class: 'actions', 'data-tables': '' });
  listTables(tables, (name) => {
    editor.value = `SELECT * FROM ${name} LIMIT 100`;
    state.sql = editor.value;
    editor.focus();
  });
  root.append(el('h1', {}, 'SQL console'), tables, editor,
    el('div', { class: 'actions' }, runButton, el('span', { class: 'muted' }, 'or Ctrl+Enter')), output);
  listener = render;
  render();
  editor.focus();
  return () => { listener = null; };
}
