"""Pages for admins, operators and grant coordinators (server-rendered, Jinja2).

Holds no business rules: those live in scheduler/.
"""
