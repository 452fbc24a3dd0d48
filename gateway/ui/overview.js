// Overview: the members by role with their state and load, and live rates from the gateway's
// counters (polled every 2 s; the history stays in the page while it is open).

import { getJson, getText } from './api.js';
import { bytes, count, el, hostPort, rate } from './format.js';
import { poll } from './poll.js';

const INTERVAL_MS = 2000;
const HISTORY = 90;
const ROLES = [
  ['jobmanager', 'JobManager shards'],
  ['taskmanager', 'TaskManagers'],
  ['gateway', 'Gateways'],
];
const RATES = [
  ['queries', 'queries/s'],
  ['errors', 'errors/s'],
  ['rows', 'rows/s'],
];
const samples = [];

/** Sums the counters the rates come from, out of the Prometheus text format. */
export function counters(text) {
  const totals = { queries: 0, errors: 0, rows: 0 };
  for (const line of text.split('\n')) {
    const match = /^(flotilla_gateway_[a-z_]+)(\{[^}]*\})?\s+([0-9.e+-]+)$/.exec(line);
    if (!match) continue;
    const [, name, labels = '', value] = match;
    if (name === 'flotilla_gateway_queries_total') {
      totals.queries += Number(value);
      if (!labels.includes('code="ok"')) totals.errors += Number(value);
    } else if (name === 'flotilla_gateway_rows_streamed_total') {
      totals.rows += Number(value);
    }
  }
  return totals;
}

/** One row per member: gossip says which gateways and shards are there, the gateway's probes
 * say who answers; TaskManagers come as a shard's page of them (the unusable and the busiest
 * first), or as a fixed list the gateway probes. */
export function members(cluster, role) {
  if (role === 'taskmanager') {
    return (cluster.taskmanagers?.members ?? []).map((member) => (member.state === undefined
      ? { id: hostPort(member.address), address: member.address, state: member.health === 'up' ? 'serving' : 'down', load: null, error: member.last_error }
      : {
        id: member.id,
        address: member.grpc_url,
        pool: member.pool,
        state: member.state === 'up' ? 'serving' : member.state,
        load: { slots_total: member.slots_total, slots_free: member.slots_free },
        error: member.last_error ?? (member.state === 'suspect' ? `no report for ${member.silent_ms} ms` : undefined),
        exit: member.previous_exit,
      }));
  }
  const listed = { jobmanager: cluster.shards }[role] ?? [];
  const health = new Map(listed.map((member) => [member.address, member]));
  const rows = (cluster.members ?? [])
    .filter((peer) => peer.role === role)
    .map((peer) => {
      const probed = health.get(peer.grpc_url);
      health.delete(peer.grpc_url);
      let state = 'serving';
      if (probed?.health === 'down') state = 'down';
      else if (peer.draining) state = 'draining';
      else if (peer.starting) state = 'starting';
      return { id: peer.id, address: peer.grpc_url ?? peer.http_addr, pool: peer.pool, state, load: peer.load, error: probed?.last_error, exit: peer.previous_exit };
    });
  // Listed but gone from gossip (or no gossip at all): only the probe's word.
  for (const member of health.values()) {
    const state = member.health === 'up' ? 'serving' : 'down';
    rows.push({ id: hostPort(member.address), address: member.address, state, load: null, error: member.last_error });
  }
  return rows.sort((a, b) => a.id.localeCompare(b.id));
}

/** "3,998 of 4,000 serving · 2 suspect · pool default 3,000 · …" out of a shard's counts. */
export function taskmanagerCounts(listing) {
  const counts = listing?.counts;
  if (!counts) return null;
  const parts = [`${count(counts.up)} of ${count(counts.known)} serving`];
  for (const state of ['suspect', 'down', 'not_serving']) {
    if (counts[state]) parts.push(`${count(counts[state])} ${state.replace('_', ' ')}`);
  }
  parts.push(`${count(counts.slots_total - counts.slots_free)} of ${count(counts.slots_total)} slots used`);
  for (const [pool, pooled] of Object.entries(listing.pools ?? {})) {
    parts.push(`pool ${pool}: ${count(pooled.up)} serving`);
  }
  return parts.join(' · ');
}

function memberTable(role, rows) {
  const slots = (load) => (load && load.slots_total ? `${load.slots_total - load.slots_free} / ${load.slots_total}` : '–');
  const memory = (load) => (load && load.memory_limit_bytes ? `${bytes(load.memory_used_bytes)} / ${bytes(load.memory_limit_bytes)}` : '–');
  const used = (load) => (load && load.slots_total ? (load.slots_total - load.slots_free) / load.slots_total : 0);
  const head = ['Member', 'State', 'Address'];
  if (role === 'taskmanager') head.push('Pool', 'Slots used', '', 'Memory');
  else head.push('In flight');
  return el('table', {},
    el('thead', {}, el('tr', {}, head.map((name) => el('th', {}, name)))),
    el('tbody', {}, rows.map((row) => {
      const cells = [
        el('td', {}, row.id, row.exit ? el('div', { class: 'exit', 'data-exit': row.exit }, `restarted: it ${row.exit}`) : null),
        el('td', { title: row.error }, el('span', { class: `state ${row.state}`, 'data-state': row.state }, row.state)),
        el('td', {}, el('code', {}, hostPort(row.address))),
      ];
      if (role === 'taskmanager') {
        const bar = el('div');
        bar.style.width = `${Math.round(used(row.load) * 100)}%`;
        cells.push(el('td', {}, row.pool ?? '–'), el('td', { class: 'num' }, slots(row.load)),
          el('td', {}, el('div', { class: 'bar' }, bar)), el('td', { class: 'num' }, memory(row.load)));
      } else {
        cells.push(el('td', { class: 'num' }, row.load ? count(row.load.in_flight) : '–'));
      }
      return el('tr', { 'data-member': row.id }, cells);
    })));
}

function sparkline(values) {
  const canvas = el('canvas', { width: 300, height: 48 });
  const context = canvas.getContext('2d');
  const top = Math.max(...values, 1e-9);
  const step = canvas.width / (HISTORY - 1);
  const offset = HISTORY - values.length;
  context.strokeStyle = '#2457c5';
  context.lineWidth = 1.5;
  context.beginPath();
  values.forEach((value, index) => {
    const x = (index + offset) * step;
    const y = canvas.height - 2 - (value / top) * (canvas.height - 4);
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
  return canvas;
}

function rates(box) {
  const series = RATES.map(([key]) => samples.slice(1).map((sample, index) => {
    const before = samples[index];
    const seconds = (sample.at - before.at) / 1000;
    return seconds > 0 ? Math.max(0, sample[key] - before[key]) / seconds : 0;
  }));
  box.replaceChildren(...RATES.map(([key, label], index) => {
    const values = series[index];
    const now = values.length ? values[values.length - 1] : NaN;
    return el('div', { class: 'panel rate', 'data-rate': key },
      el('div', { class: 'muted' }, label),
      el('div', { class: 'value' }, rate(now)),
      values.length > 1 ? sparkline(values) : el('div', { class: 'muted' }, 'measuring…'));
  }));
}

export function mount(root) {
  const summary = el('p', { class: 'muted' }, 'Loading…');
  const rateBox = el('div', { class: 'grid' });
  const sections = el('div');
  root.append(el('h1', {}, 'Cluster overview'), summary, rateBox, sections);
  rates(rateBox);
  return poll(async () => {
    let cluster;
    let metrics;
    try {
      [cluster, metrics] = await Promise.all([getJson('/v1/cluster'), getText('/metrics')]);
    } catch (error) {
      if (error.status !== 403) throw error;
      summary.textContent = 'The cluster view needs an admin token (or auth.open_admin = true); the Queries page and the console work with yours.';
      return false;
    }
    samples.push({ at: performance.now(), ...counters(metrics) });
    if (samples.length > HISTORY) samples.shift();
    rates(rateBox);
    const byRole = ROLES.map(([role, title]) => [role, title, members(cluster, role)]);
    const listing = cluster.taskmanagers;
    const known = (role, rows) => (role === 'taskmanager' && listing?.counts ? listing.counts.known : rows.length);
    const serving = (role, rows) => (role === 'taskmanager' && listing?.counts ? listing.counts.up : rows.filter((row) => row.state === 'serving').length);
    summary.textContent = byRole
      .map(([role, title, rows]) => `${count(serving(role, rows))} of ${count(known(role, rows))} ${title.toLowerCase()} serving`)
      .join(' · ');
    sections.replaceChildren(...byRole
      .filter(([role, , rows]) => rows.length > 0 || role !== 'gateway')
      .map(([role, title, rows]) => {
        const note = role === 'taskmanager' ? taskmanagerCounts(listing) : null;
        const shown = known(role, rows) > rows.length ? ` — the first ${rows.length}: the unusable, then the busiest` : '';
        return el('section', { 'data-role': role },
          el('h2', {}, `${title} (${count(known(role, rows))})`),
          note ? el('p', { class: 'muted', 'data-counts': role }, note + shown) : null,
          rows.length ? memberTable(role, rows) : el('p', { class: 'muted' }, listing?.error ? `unknown: ${listing.error}` : 'none known'));
      }));
  }, INTERVAL_MS);
}
