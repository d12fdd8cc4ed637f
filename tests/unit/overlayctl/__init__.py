"""overlayctl's unit tests: pure planning, rendering, parsing, the CLI contract, without hosts."""
