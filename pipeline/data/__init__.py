"""The data a run learns from: raw rows read and normalized (`read`), the train/validation/test splits and
their tokenization (`splits`), their content identity (`fingerprint`), users' files in and out of the commands
after the search (`files`), and datasets' private API in one place (`internals`)."""
