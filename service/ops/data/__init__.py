"""``/datasets``, ``/data/loader`` and ``/data/images``: tables, CSV, built-in sets, archives,
transforms and batching."""
