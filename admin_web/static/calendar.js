// The organisation's bookings in FullCalendar (vendored, MIT): month, week, day and list.
//
// Every time is Prague's (the service's zone, data-zone), whatever zone the computer is
// set to: a travelling admin's laptop showed a 10:00 meeting at its own zone's time, and
// a click on a slot booked its own zone's hour. FullCalendar knows only the browser's
// zone and UTC (named zones need a plugin and a library not vendored), so it runs in
// UTC as a bare wall clock: the server gives and takes Prague's wall-clock times without
// an offset (admin_web/bookings.py events), and "now" is Prague's, from Intl.
'use strict';

(() => {
  const element = document.getElementById('calendar');
  const lang = element.dataset.locale;
  const zone = element.dataset.zone;
  const pad = (n) => String(n).padStart(2, '0');
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  // The zone's wall-clock time of an instant, as FullCalendar reads a time in UTC.
  function wallClock(instant) {
    const p = Object.fromEntries(parts.formatToParts(instant).map(({ type, value }) => [type, value]));
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
  }
  // A date of the calendar (a wall-clock time held as UTC) as the server takes it.
  const asked = (date) => date.toISOString().slice(0, 19);

  // The organisation's share and its use in the days shown, from now on (bookings.py share).
  const share = document.getElementById('share');
  const chosen = document.getElementById('share-organisation');
  const fill = (template, values) => template.replace(/%\((\w+)\)s/g, (_, k) => values[k]);
  const number = new Intl.NumberFormat(lang);
  const moment = new Intl.DateTimeFormat(lang === 'cs' ? 'cs' : 'en-GB', {
    timeZone: 'UTC', weekday: 'short', day: 'numeric', month: 'numeric', hour: '2-digit', minute: '2-digit',
  });
  let asking = 0;
  async function showShare(start, end) {
    const [quota, use, note] = ['share-quota', 'share-use', 'share-note'].map((id) => document.getElementById(id));
    const organisation = chosen ? chosen.value : '';
    const mine = ++asking;
    for (const key of ['quota', 'peak', 'left', 'from']) delete share.dataset[key];
    if (chosen && !organisation) {
      [quota.textContent, use.textContent, note.textContent] = [share.dataset.tChoose, '', ''];
      return;
    }
    const query = new URLSearchParams({ start: asked(start), end: asked(end) });
    if (organisation) query.set('organisation_id', organisation);
    let data;
    try {
      data = await window.multipointAdmin.fetchJson(`${share.dataset.src}?${query}`);
    } catch (error) {
      data = null;
    }
    if (mine !== asking) return;  // another range or organisation was asked for since
    if (data === null) {
      [quota.textContent, use.textContent, note.textContent] = ['', '', ''];
      return;
    }
    const values = {
      ...data, quota: data.quota_units, pool: data.pool_units, percent: number.format(data.share_percent),
      peak: data.peak_units, left: data.left_units, hours: data.borrow_lead_hours,
      reserve: data.izs_reserve_units, at: data.peak_at && moment.format(new Date(`${data.peak_at}Z`)),
    };
    const izs = data.izs ? ` ${fill(share.dataset.tIzs, values)}` : '';
    if (data.past) {
      [quota.textContent, use.textContent, note.textContent] = ['', share.dataset.tPast, ''];
    } else if (data.holder === null) {
      [quota.textContent, use.textContent, note.textContent] = [fill(share.dataset.tNone, values), '', izs.trim()];
    } else {
      quota.textContent = fill(share.dataset.tQuota, values)
        + (data.holder_is_own ? '' : ` ${fill(share.dataset.tGroup, values)}`);
      use.textContent = fill(data.peak_units ? share.dataset.tUsed : share.dataset.tUnused, values);
      note.textContent = fill(share.dataset.tLead, values) + izs;
      Object.assign(share.dataset, {
        quota: data.quota_units, peak: data.peak_units, left: data.left_units, from: asked(start),
      });
    }
  }

  const calendar = new FullCalendar.Calendar(element, {
    locale: lang === 'cs' ? 'cs' : 'en-gb',
    timeZone: 'UTC',
    now: () => wallClock(new Date()),
    firstDay: 1,
    initialView: window.innerWidth < 700 ? 'listWeek' : 'timeGridWeek',
    headerToolbar: { left: 'prev,next today', center: 'title', right: 'dayGridMonth,timeGridWeek,timeGridDay,listWeek' },
    slotMinTime: '06:00:00',
    slotMaxTime: '21:00:00',
    nowIndicator: true,
    height: 'auto',
    events(info, success, failure) {
      const range = new URLSearchParams({ start: asked(info.start), end: asked(info.end) });
      window.multipointAdmin.fetchJson(`${element.dataset.events}?${range}`).then(success, failure);
    },
    datesSet(info) {
      showShare(info.start, info.end);
    },
    eventDidMount(info) {
      const p = info.event.extendedProps;
      info.el.title = `${info.event.title} · ${p.organisation} · ${p.units} u`;
      info.el.dataset.bookingId = info.event.groupId;
    },
    dateClick(info) {
      // A click on an empty slot opens the form at that time (the UTC fields: see above).
      const d = info.date;
      const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
      const start = info.allDay ? '10:00' : `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
      const endHour = info.allDay ? 11 : Math.min(d.getUTCHours() + 1, 23);
      window.location.href = `/admin/bookings/new?date=${date}&start=${start}&end=${pad(endHour)}:${pad(info.allDay ? 0 : d.getUTCMinutes())}`;
    },
  });
  if (chosen) chosen.addEventListener('change', () => showShare(calendar.view.activeStart, calendar.view.activeEnd));
  calendar.render();
  window.multipointCalendar = calendar;
})();
