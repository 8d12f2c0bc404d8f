// Small helpers for every admin page: confirmations, copy buttons, print, and the CSRF
// token for scripts that change something with fetch().
'use strict';

window.multipointAdmin = {
  csrf: document.querySelector('meta[name="csrf-token"]')?.content || '',
  async fetchJson(url) {
    const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  },
};

document.addEventListener('click', (event) => {
  const target = event.target.closest('[data-confirm], [data-copy], [data-print]');
  if (!target) return;
  if (target.dataset.confirm !== undefined && !window.confirm(target.dataset.confirm)) {
    event.preventDefault();
  } else if (target.dataset.copy !== undefined) {
    navigator.clipboard?.writeText(target.dataset.copy);
    target.setAttribute('aria-live', 'polite');
  } else if (target.dataset.print !== undefined) {
    window.print();
  }
});
