"""The process a command runs in: start-up and exit codes (`startup`), interrupts held during writes
(`interrupts`), passwords masked in all it writes (`secrets`), torchrun ranks (`distributed`), and SQLite
stores (`sqlite`)."""
