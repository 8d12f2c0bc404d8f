// Dashboard charts, drawn from the tables on the page (the tables stay the accessible,
// printable truth; the charts are for a glance).
'use strict';

(() => {
  const COLOURS = ['#9aa3ad', '#7fa7d6', '#4f86c6', '#2f6aa8', '#f2a900', '#5fb26a', '#1e7d32', '#b3261e', '#e07b39', '#555'];
  const statusRows = [...document.querySelectorAll('#by-status tbody tr')];
  const statusLabels = statusRows.map((r) => r.cells[0].textContent.trim());
  const statusCounts = statusRows.map((r) => Number(r.cells[1].textContent));
  const common = { animation: false, maintainAspectRatio: false };
  new Chart(document.getElementById('status-chart'), {
    type: 'bar',
    data: { labels: statusLabels, datasets: [{ data: statusCounts, backgroundColor: COLOURS }] },
    options: { ...common, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  const headers = [...document.querySelectorAll('#by-region thead th')].slice(1).map((th) => th.textContent.trim());
  const regionRows = [...document.querySelectorAll('#by-region tbody tr[data-region]')];
  new Chart(document.getElementById('region-chart'), {
    type: 'bar',
    data: {
      labels: regionRows.map((r) => r.cells[0].textContent.trim()),
      datasets: headers.map((label, i) => ({ label, backgroundColor: COLOURS[i % COLOURS.length],
        data: regionRows.map((r) => Number(r.cells[i + 1].textContent)) })),
    },
    options: { ...common, indexAxis: 'y', scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true } } },
  });
})();
