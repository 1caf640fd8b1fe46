"""Browser end-to-end tests (a package, so their fixtures end with the last of them)."""
