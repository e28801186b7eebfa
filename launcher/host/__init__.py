"""eKuiper's side of the wire protocol, as ekl plays it: one plugin's channels and journal.

``instance.PluginInstance`` is ekl's counterpart of eKuiper's ``PluginIns``: the control
channel, the function, source and sink channels of the symbols it started, and the journal
replayed after a restart. ``channels`` holds the one request/reply helper of the inverted
REQ/REP channels (control and function). Nothing here decides how a plugin is started
(``start``) or when it is restarted (``supervise``).
"""
