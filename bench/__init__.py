"""hotr's benchmarks: run ``python -m bench`` (``--quick`` for a smoke run under a minute)."""
