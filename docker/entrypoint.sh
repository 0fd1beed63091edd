#!/bin/sh
# Entry point of the service images: `faceid "$@"`, after reading the database password
# from a file (a Compose or Kubernetes secret) into PGPASSWORD, which libpq reads. The value
# then never appears in `docker inspect` or in FACEID_DATABASE_URL, and needs no escaping.
set -eu
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  if [ ! -r "$PGPASSWORD_FILE" ]; then
    echo "faceid: PGPASSWORD_FILE=$PGPASSWORD_FILE is missing or not readable by uid $(id -u)" >&2
    exit 1
  fi
  # $(...) drops the file's trailing newlines, as the postgres image does with POSTGRES_PASSWORD_FILE.
  PGPASSWORD="$(cat "$PGPASSWORD_FILE")"
  export PGPASSWORD
  unset PGPASSWORD_FILE
fi
exec faceid "$@"
