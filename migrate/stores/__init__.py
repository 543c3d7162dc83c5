"""Stores: one small reader and/or writer per place mail can live."""
