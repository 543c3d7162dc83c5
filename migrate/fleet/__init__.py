"""Fleet migrations: many accounts, passes, a local pool or distributed workers (see docs/fleet.md)."""
