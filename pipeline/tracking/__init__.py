"""What MLflow keeps: runs per study and trial (`tracker`), the Trainer callbacks that write them (`callbacks`),
writes that wait out a server outage (`outbox`), each run's config, command and data (`provenance`), plots and
tables (`report`), the model registry and its champion rule (`registry`), and MLflow's error words in one place
(`internals`)."""
