"""CFT training: the loss (pure tensor functions), batching, the Trainer, run directories and
the `cftrec train` pipeline (settings -> run directory)."""
