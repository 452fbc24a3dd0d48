// The UI's shell: the hash router and the token form.

import { setToken } from './api.js';
import * as overview from './overview.js';
import * as queries from './queries.js';
import * as detail from './detail.js';
import * as sqlConsole from './console.js';

const view = document.getElementById('view');
const tokenForm = document.getElementById('token');
let settings = { allow_cancel: false, auth: false };
let unmount = () => {};

/** Splits `#/queries?state=failed` into the page, its argument and its parameters. */
function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean);
  return { page: parts[0] ?? 'overview', arg: parts[1], params: new URLSearchParams(search) };
}

function route() {
  unmount();
  view.replaceChildren();
  const { page, arg, params } = parseHash();
  const pages = { overview, queries, query: detail, console: sqlConsole };
  const module = pages[page] ?? overview;
  for (const link of document.querySelectorAll('nav a')) {
    const current = link.dataset.page === page || (page === 'query' && link.dataset.page === 'queries');
    link.classList.toggle('current', current);
  }
  document.title = `Flotilla · ${page}`;
  unmount = module.mount(view, { arg, params, settings }) ?? (() => {});
}

window.addEventListener('flotilla:unauthorized', () => {
  tokenForm.hidden = false;
  document.getElementById('token-input').focus();
});

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  setToken(document.getElementById('token-input').value.trim());
  tokenForm.hidden = true;
  route();
});

async function start() {
  try {
    const response = await fetch('config.json', { cache: 'no-store' });
    if (response.ok) settings = await response.json();
  } catch {
    // The defaults: no cancel button.
  }
  window.addEventListener('hashchange', route);
  route();
}

start();
