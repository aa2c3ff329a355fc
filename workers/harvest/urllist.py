"""URL lists: fastai's ``urls_<class>.txt`` format and the import_urls job.

The lesson saves search results as one URL per line and downloads them later; a list
made that way (or by hand) imports here with the same downloader, guard and provenance
as a search harvest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.ingest import Provenance, class_by_name
from core.params import ImportUrlsParams
from workers.harvest.intake import Candidate, download_all, filename_from_url
from workers.harvest.tally import Tally
from workers.runner import JobContext
from workers.verify.streaming import Verifier, verifying_import


def import_urls_job(ctx: JobContext) -> dict[str, Any]:
    params = ImportUrlsParams.model_validate(ctx.params)
    candidates: list[Candidate] = []
    with ctx.session() as session:
        labels: dict[str, int] = {}
        ranks: Counter[str] = Counter()
        for item in params.items:
            if item.label not in labels:
                labels[item.label] = class_by_name(
                    session, ctx.project_id, item.label, create=True
                ).id
            # The line number within the class's list, like fastai's file numbering.
            ranks[item.label] += 1
            provenance = Provenance(
                source="url_list",
                filename=filename_from_url(item.url),
                rank=ranks[item.label],
                image_url=item.url,
            )
            candidates.append(Candidate(item.url, item.label, labels[item.label], provenance))

    tally = Tally()
    for candidate in candidates:
        tally.count(candidate.class_name, "found")
    ctx.report(0, tally.found, tally.message("importing URLs"), force=True)

    def work(verifier: Verifier | None) -> dict[str, Any]:
        download_all(ctx, candidates, tally, "importing URLs", verifier)
        return tally.result()

    return verifying_import(ctx, params.verify, work, lambda _: tally.message("done"))
