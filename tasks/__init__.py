"""Container-side code of the recommender pipeline.

Everything under ``tasks/`` runs inside a container (or a subprocess on the
Airflow worker) and never imports Airflow: the DAG only passes URIs, the run
date and the model version on the command line.
"""
