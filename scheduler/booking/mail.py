"""Delivering the outbox (scheduler/booking/notices.py) through the configured SMTP server."""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy import select

from scheduler.config import SmtpConfig
from scheduler.db import Database
from scheduler.models import Notification

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10


def message(notification: Notification, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = notification.to_address
    mail["Subject"] = notification.subject
    mail.set_content(notification.body)
    if notification.ics:
        method = "CANCEL" if "METHOD:CANCEL" in notification.ics else "REQUEST"
        mail.add_attachment(notification.ics.encode(), maintype="text", subtype="calendar",
                            filename="invite.ics", params={"method": method})
    return mail


def deliver_outbox(db: Database, smtp: SmtpConfig, now: datetime, limit: int = 200) -> int:
    """Send what is waiting; returns how many were sent. Blocking: run it in a thread.

    Each notice is marked sent right after the server accepted it: at least once, and
    twice only if the process dies between the two.
    """
    if not smtp.host:
        return 0
    with db.session() as session:
        pending = list(session.scalars(select(Notification)
                                       .where(Notification.sent_at.is_(None),
                                              Notification.attempts < MAX_ATTEMPTS)
                                       .order_by(Notification.id).limit(limit)))
    if not pending:
        return 0
    sent = 0
    try:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    except OSError as exc:
        log.warning("SMTP server %s:%s unreachable: %s", smtp.host, smtp.port, exc)
        return 0
    with client:
        if smtp.starttls:
            client.starttls()
        if smtp.username:
            client.login(smtp.username, smtp.password)
        for notification in pending:
            error = ""
            try:
                client.send_message(message(notification, smtp.sender))
            # ValueError: a notice no mail can carry (a line break in a header) fails on
            # its own; raised, it stopped the run, and every run after it, at that notice.
            except (smtplib.SMTPException, OSError, ValueError) as exc:
                error = str(exc)[:500]
                log.warning("notice %s to %s failed: %s", notification.id,
                            notification.to_address, exc)
            with db.write_session() as session:
                row = session.get(Notification, notification.id)
                assert row is not None
                row.attempts += 1
                if error:
                    row.last_error = error
                else:
                    row.sent_at = now
                    sent += 1
    return sent
