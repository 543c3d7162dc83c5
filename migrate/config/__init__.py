"""What the user configures: endpoints and credentials, provider presets,
rates, saved jobs and their schedules, and the run defaults a preset implies.

Nothing here talks to a server or touches an archive.
"""
