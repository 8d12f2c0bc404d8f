"""Booking and capacity: bookings, recurrences, invitations, admission, the day cache and its locking."""
