"""Usage read from answers and streams, the price table, and what the usage costs."""
