"""Ingest: one file -> one committed episode; many files -> many, on any executor.

``source`` opens and streams the input (decompression, hash, guards), ``rules`` checks every part
(the JSON Schema and what a schema cannot state), ``tabulate`` turns checked steps into column
batches, ``builder`` runs one episode's parts through them into the lake's writer, ``parallel``
splits a large file over two processes, ``run`` is one file end to end and ``batch`` many.
"""
