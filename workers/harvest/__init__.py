"""Harvest: image search in a real browser, URL lists, and the guarded downloader they share.

``job.harvest_job`` and ``urllist.import_urls_job`` are the job functions;
``core.ingest.parse_url_list`` reads fastai's ``urls_<class>.txt`` format for uploads.
"""
