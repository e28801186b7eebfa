"""Plugin authors' tools: scaffold (``ekl init``), validate, package, and the pytest plugin.

Each starts plugins only through the start path (``ekl.launcher.start``) and reads them
only through the plugin reader (``ekl.launcher.plugin``).
"""
