"""Verification: any file in, a clean dataset out, nothing lost.

Each image is decoded once in an isolated child process, which writes the normalised copy
and the thumbnail to the store and returns a small verdict (verdict.py). The parent only
writes verdicts to the database, in batches, and records a label event for every state it
changes (writer.py). Near-duplicates are grouped at the end.

Imports verify what they bring in while they run (streaming.Verifier); the verify job
(job.py) takes every pending image (every non-deleted one with ``recheck``): what an import
left pending, or a recheck after the limits changed.
"""
