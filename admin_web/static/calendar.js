// The organisation's bookings in FullCalendar (vendored, MIT): month, week, day and list.
'use strict';

(() => {
  const element = document.getElementById('calendar');
  const lang = element.dataset.locale;
  const calendar = new FullCalendar.Calendar(element, {
    locale: lang === 'cs' ? 'cs' : 'en-gb',
    firstDay: 1,
    initialView: window.innerWidth < 700 ? 'listWeek' : 'timeGridWeek',
    headerToolbar: { left: 'prev,next today', center: 'title', right: 'dayGridMonth,timeGridWeek,timeGridDay,listWeek' },
    slotMinTime: '06:00:00',
    slotMaxTime: '21:00:00',
    nowIndicator: true,
    height: 'auto',
    events: element.dataset.events,
    eventDidMount(info) {
      const p = info.event.extendedProps;
      info.el.title = `${info.event.title} · ${p.organisation} · ${p.units} u`;
      info.el.dataset.bookingId = info.event.groupId;
    },
    dateClick(info) {
      // A click on an empty slot opens the form at that time.
      const pad = (n) => String(n).padStart(2, '0');
      const d = info.date;
      const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
      const start = info.allDay ? '10:00' : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      const endHour = info.allDay ? 11 : Math.min(d.getHours() + 1, 23);
      window.location.href = `/admin/bookings/new?date=${date}&start=${start}&end=${pad(endHour)}:${pad(info.allDay ? 0 : d.getMinutes())}`;
    },
  });
  calendar.render();
  window.multipointCalendar = calendar;
})();
