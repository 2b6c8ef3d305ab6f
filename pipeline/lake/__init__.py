"""The lake on disk and every change to it; the only package that knows the layout of files.

``tables`` (each table's Arrow schema: the only list of tables), ``layout`` (where the lake is,
folder names, listing a snapshot), ``writer`` (Parquet, flushed by size), ``commit`` (staging and
the one rename), ``maintenance`` (remove, gc) and ``check``. Uses only ``pipeline.errors``, the
standard library and pyarrow.
"""
