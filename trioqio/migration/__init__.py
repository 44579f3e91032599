"""``trioqio migrate``: a live-migration-shaped transfer (QEMU ``migration/``).

A destination listens (QEMU ``socket_start_incoming_migration``); a source connects a main
channel and then N multifd channels in parallel (QEMU ``multifd_send_setup``), and sends a
RAM image as page packets over all of them. See ``docs/migration.md``.
"""
