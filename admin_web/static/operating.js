// The operator's page: refresh the live rooms every 3 s (not while a control in them has
// the keyboard focus, so tabbing through the buttons is not interrupted), and draw the
// capacity timeline of the pool or of one organisation.
'use strict';

(() => {
  const live = document.getElementById('live-rooms');
  const auto = document.getElementById('auto-refresh');
  async function refresh() {
    if (!auto.checked || live.contains(document.activeElement)) return;
    try {
      const response = await fetch(live.dataset.src, { credentials: 'same-origin' });
      if (response.ok && !live.contains(document.activeElement)) live.innerHTML = await response.text();
    } catch (error) { /* the next tick tries again */ }
  }
  setInterval(refresh, 3000);

  const canvas = document.getElementById('capacity-chart');
  const select = document.getElementById('cap-org');
  const labels = JSON.parse(canvas.dataset.labels);
  let chart = null;
  async function draw() {
    const url = '/admin/operating/capacity.json' + (select.value ? `?organisation_id=${select.value}` : '');
    const data = await window.multipointAdmin.fetchJson(url);
    const points = (key) => data.segments.flatMap((s) => [{ x: Date.parse(s.start), y: s[key] }, { x: Date.parse(s.end), y: s[key] }]);
    const datasets = [{ label: labels.used, data: points('used_units'), borderColor: '#0b5cad', backgroundColor: 'rgba(11,92,173,.15)', fill: true }];
    if (select.value) {
      datasets.push({ label: labels.own, data: points('own_used_units'), borderColor: '#9a6700' });
      datasets.push({ label: labels.free, data: points('free_units'), borderColor: '#1e7d32', borderDash: [6, 4] });
    }
    const pool = data.segments.length ? [{ x: Date.parse(data.segments[0].start), y: data.pool_units },
      { x: Date.parse(data.segments.at(-1).end), y: data.pool_units }] : [];
    datasets.push({ label: labels.pool, data: pool, borderColor: '#b3261e', borderDash: [2, 2] });
    const fmt = new Intl.DateTimeFormat(document.documentElement.lang, { weekday: 'short', day: 'numeric', month: 'numeric', hour: '2-digit', minute: '2-digit' });
    const config = {
      type: 'line',
      data: { datasets: datasets.map((d) => ({ pointRadius: 0, borderWidth: 2, ...d })) },
      options: { animation: false, maintainAspectRatio: false, parsing: false,
        scales: { x: { type: 'linear', min: pool[0]?.x, max: pool[1]?.x, ticks: { callback: (v) => fmt.format(new Date(v)), maxTicksLimit: 8 } },
          y: { beginAtZero: true } },
        plugins: { tooltip: { callbacks: { title: (items) => fmt.format(new Date(items[0].parsed.x)) } } } },
    };
    chart?.destroy();
    chart = new Chart(canvas, config);
  }
  select.addEventListener('change', draw);
  draw();
})();
