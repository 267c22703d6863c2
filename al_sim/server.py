"""``python -m al_sim.server --dir DIR``: an MLflow tracking server on PostgreSQL, one command."""

from al_sim.tracking.mlflow_server import main

if __name__ == "__main__":
    main()
