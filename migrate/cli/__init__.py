"""The command line: a typer app, one module per command group.

Each module parses its options, builds stores, runs the engine and renders
the result; :mod:`migrate.cli.main` registers them and is the entry point.
"""
