"""Airflow-side glue for prefpipe, loaded from Airflow's plugins folder.

Airflow puts ``[core] plugins_folder`` on ``sys.path`` in every component (scheduler,
dag-processor, workers), so the DAG files import these modules by their own names
(``from prefpipe_slack import SlackAlertNotifier``). Point the folder at this directory::

    export AIRFLOW__CORE__PLUGINS_FOLDER=/path/to/project/plugins

- ``prefpipe_slack``: where Slack messages go (environment or an Airflow connection),
  links back to the Airflow run, and the failure notifier used in the DAGs'
  ``default_args``. The messages themselves are built in ``pipelines.alerts``.
- ``prefpipe_retry``: the DAGs' retry policy (bad input fails at once, the rest retries).
"""
