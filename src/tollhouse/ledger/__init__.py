"""The ledger: tables, engine and migrations, the store, the writer and its disk spool."""
