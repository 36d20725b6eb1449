"""Airflow-side code of the recommender pipeline: settings, infrastructure,
compute backends, deployment and alerting. The only bridge between ``dags/``
(wiring) and ``tasks/`` (container code). Ship as ``plugins.zip`` on MWAA.
"""
