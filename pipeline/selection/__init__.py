"""Selection: which samples to ask about. Strategies are registry objects (base, strategies), ranked deterministically (ranking); diagnostics rate a selection."""
