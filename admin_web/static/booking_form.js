// The booking form: show the capacity left for the chosen time as it is chosen, let
// a refused booking take one of the nearest free slots with one press, and offer only
// the room units the chosen organisation may call.
'use strict';

(() => {
  const form = document.getElementById('booking-form');
  const box = document.getElementById('capacity');
  // "repeat": whether a time already past is refused on a change (bookings.py capacity).
  const fields = ['organisation_id', 'date', 'start', 'end', 'hd', 'sd', 'audio', 'mixed', 'repeat'];
  let timer = null;
  let asked = 0;
  const fill = (template, values) => template.replace(/%\((\w+)\)s/g, (_, k) => values[k]);

  async function check() {
    const params = new URLSearchParams();
    for (const name of fields) params.set(name, form.elements[name]?.value ?? '');
    // A change: the server takes the booking's zone and organisation, as saving does.
    if (box.dataset.booking) params.set('booking', box.dataset.booking);
    const mine = ++asked;
    box.textContent = box.dataset.tWait;
    box.className = 'capacity';
    try {
      const data = await window.multipointAdmin.fetchJson(`${box.dataset.src}?${params}`);
      if (mine !== asked) return;
      if (!data.ok) { box.textContent = Object.values(data.errors).join(' '); return; }
      const values = { needed: data.needed_units, free: data.free_units };
      box.textContent = fill(data.fits ? box.dataset.tFits : box.dataset.tShort, values);
      // Beside the free figure, the organisation's share and how much of it is booked
      // then (bookings.py _share_json): the free figure may be more (capacity no share
      // holds, shares borrowed near the start) or less (the pool is full).
      const share = data.share;
      if (share) {
        box.textContent += ` ${share.holder === null ? box.dataset.tNoShare : fill(box.dataset.tShare, {
          holder: share.holder, quota: share.quota_units, used: share.peak_units, left: share.left_units,
        })}`;
      }
      box.className = `capacity ${data.fits ? 'fits' : 'short'}`;
      box.dataset.free = data.free_units;
      box.dataset.needed = data.needed_units;
      box.dataset.shareUsed = share ? share.peak_units : '';
      box.dataset.shareLeft = share ? share.left_units : '';
    } catch (error) {
      box.textContent = '';
    }
  }
  // An end earlier than the start is the next day's (admin_web/booking_form.py end_day,
  // as the server books it): say so beside the end, with that date, as it is chosen.
  const nextDay = document.getElementById('end-next-day');
  function showNextDay() {
    const { date, start, end } = form.elements;
    const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date.value);
    const next = day && start.value && end.value && end.value < start.value;
    nextDay.hidden = !next;
    if (!next) return;
    const when = new Date(Date.UTC(Number(day[1]), Number(day[2]) - 1, Number(day[3]) + 1));
    const format = new Intl.DateTimeFormat(document.documentElement.lang || 'cs',
                                           { dateStyle: 'medium', timeZone: 'UTC' });
    nextDay.textContent = nextDay.dataset.t.replace('%(date)s', format.format(when));
  }
  form.addEventListener('input', (event) => {
    if (!fields.includes(event.target.name)) return;
    if (['date', 'start', 'end'].includes(event.target.name)) showNextDay();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  showNextDay();
  check();

  document.querySelectorAll('.use-slot').forEach((button) => button.addEventListener('click', () => {
    const [date, start] = button.dataset.start.split('T');
    form.elements.date.value = date;
    form.elements.start.value = start;
    form.elements.end.value = button.dataset.end.split('T')[1];
    showNextDay();
    check();
    form.elements.start.focus();
  }));

  // A unit the chosen organisation may not call is hidden and unticked (the server
  // would refuse it); the list comes from the server as the user's units.
  const organisation = document.getElementById('f-organisation_id');
  function showUnits() {
    for (const label of document.querySelectorAll('.call-unit')) {
      const callable = label.dataset.within.split(' ').includes(organisation.value);
      label.hidden = !callable;
      if (!callable) label.querySelector('input').checked = false;
    }
  }
  if (organisation && !organisation.disabled) {
    organisation.addEventListener('change', showUnits);
    showUnits();
  }
})();
