"""HTTP endpoints of the simulated API, one module per resource family."""
