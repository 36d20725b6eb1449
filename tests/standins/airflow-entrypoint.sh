#!/bin/sh
# As the official image's entrypoint: `bash ...` and `python ...` run as given, anything else is an airflow command.
case "$1" in
  bash|python|sh) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
