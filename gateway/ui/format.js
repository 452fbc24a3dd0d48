// Small helpers: DOM building (text only, never HTML strings) and number formats.

/** Builds an element: `el('td', {class: 'num'}, 'text', child)`. */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

export function count(value) {
  return value === null || value === undefined ? '–' : Number(value).toLocaleString('en-US');
}

export function millis(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${value.toFixed(1)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

export function bytes(value) {
  if (value === null || value === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = Number(value);
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${scaled} B` : `${scaled.toFixed(1)} ${units[unit]}`;
}

export function rate(value) {
  if (!Number.isFinite(value)) return '–';
  return value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2);
}

export function time(unixMs) {
  return unixMs ? new Date(unixMs).toLocaleTimeString('en-GB') : '–';
}

/** A query's state as a person reads it: running, succeeded, failed, or cancelled. */
export function stateOf(record) {
  return record.status === 'failed' && record.code === 'cancelled' ? 'cancelled' : record.status;
}

export function badge(state) {
  return el('span', { class: `state ${state}`, 'data-state': state }, state);
}

/** The host:port of a member's URL, shorter in tables. */
export function hostPort(url) {
  return url ? url.replace(/^[a-z]+:\/\//, '') : '–';
}
