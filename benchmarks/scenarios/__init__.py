"""Side-by-side benchmark scenarios; each module exports ``SCENARIOS: list[Scenario]``."""
