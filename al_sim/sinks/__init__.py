"""Where a run reports to, as callbacks: run dir, progress, checkpoint, MLflow writer."""
