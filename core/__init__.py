"""The domain shared by the HTTP edge (api, web) and the workers.

Settings, database and tables, the image store, ingest, labels, projects, statistics,
export, job bookkeeping and the ONNX predictor. It imports neither ``api``, ``web`` nor
``workers``; tests/test_boundaries.py holds it to that.
"""
