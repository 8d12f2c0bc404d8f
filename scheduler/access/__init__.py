"""Accounts and access: users and passwords, sessions and API tokens, roles, the audit log."""
