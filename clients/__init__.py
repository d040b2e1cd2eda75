"""stedq.clients: Python client library, the `stedq score` CLI, examples."""
