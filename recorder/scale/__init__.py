"""Scaling past one appliance: recordings uploaded to S3 (with Object Lock), the index and
the key store in PostgreSQL, many sensors sharing both.

    store.py      the recording store: a local folder or an S3 bucket (put/get/head/...)
    s3conn.py     an S3 client from the config (endpoint, credentials, path style)
    pg.py         the index and the key store on PostgreSQL (the SQLite SQL, shared)
    spool.py      the bounded on-disk queues a sensor fills while S3 or PostgreSQL is away
    journal.py    the write-behind index a sensor records into (PostgreSQL backend)
    uploader.py   the worker that uploads closed recordings, verified, then frees the disk
    auditship.py  the audit trail shipped to the bucket in object-locked segments
    locks.py      Object Lock kept in step with holds, extensions and deletions
    backends.py   which index, key store and store an archive uses (from the config)
    runtime.py    the workers a recording session runs (wired in runtime/session.py)
    verify.py     what `recorder verify` adds for uploaded recordings and shipped trails

Nothing here is imported unless the config asks for s3 or postgresql: boto3 and psycopg
are the optional extra `scale` (`pip install '.[scale]'`).
"""
