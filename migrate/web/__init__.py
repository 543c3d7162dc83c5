"""The read-only archive viewer behind ``mailmigrate serve`` (optional extra ``serve``).

Layers: it reads archives through :mod:`migrate.archive.catalog` and never
imports the CLI. ``app`` builds the Starlette application (routes, access
token, security headers), ``views`` the data of every page (the JSON twins
and what the HTML templates show), ``sanitize`` makes a mail's HTML safe to
show, ``datasette`` the metadata for the Datasette option.
"""
