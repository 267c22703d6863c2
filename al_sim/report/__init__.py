"""The cross-run report: MLflow reader, statistics, tables, figures. Imports no torch."""
