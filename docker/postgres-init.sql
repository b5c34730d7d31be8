-- Extra databases on the stack's PostgreSQL: MLflow's backend store and Langfuse's.
CREATE DATABASE mlflow;
CREATE DATABASE langfuse;
