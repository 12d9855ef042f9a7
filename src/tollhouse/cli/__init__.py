"""The tollhouse command: each subcommand parses its options and hands over to compose."""
