"""Book tooling (notebook runner, generated pages, results, plots): not on the runtime path."""
