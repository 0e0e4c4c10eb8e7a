"""The rig service: the one process that owns the bench and the books. Delivery loop and
watchdog (``loop``), flow monitor, alarm manager, books (SQLite), auth, HTTP API and server."""
