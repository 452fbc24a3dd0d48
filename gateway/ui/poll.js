// The one poller of each page, paused while the tab is hidden, and the status line it fills.

const status = document.getElementById('status');

/**
 * Calls `tick` now and every `intervalMs` while the tab is visible, one call at a time, until
 * the returned stop function is called or `tick` returns false (a query that ended).
 */
export function poll(tick, intervalMs) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    timer = null;
    if (stopped || document.hidden) return;
    let again = true;
    try {
      again = (await tick()) !== false;
      showStatus('');
    } catch (error) {
      showStatus(`${error.code ?? 'error'}: ${error.message}`);
    }
    if (again && !stopped && !document.hidden) timer = setTimeout(run, intervalMs);
  };
  const onVisibility = () => {
    if (!document.hidden && !stopped && timer === null) run();
  };
  document.addEventListener('visibilitychange', onVisibility);
  run();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
}

export function showStatus(text) {
  status.textContent = text;
}
