"""Keeping plugins running: states, health checks, restarts, the status file.

arbiter (many plugins under one launcher) -> watcher (one plugin: start, health, back-off,
restart, journal replay) -> the plugin's ``host.PluginInstance`` and its process. Each has
one job; every timeout is a named ``SupervisorSettings`` field. ``pipeline`` keeps one data
flow (source -> function -> sink) going across restarts for ``ekl run``.
"""
