"""URL lists: fastai's ``urls_<class>.txt`` format and the import_urls job.

The lesson saves search results as one URL per line and downloads them later; a list
made that way (or by hand) imports here with the same downloader, guard and provenance
as a search harvest.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from api.ingest import Provenance, class_by_name
from api.params import ImportUrlsParams
from workers.harvest.download import Downloader, FetchLimits
from workers.harvest.intake import Candidate, filename_from_url, take_in
from workers.harvest.ssrf import AddressPolicy
from workers.harvest.tally import Tally
from workers.runner import JobContext


def parse_url_list(text: str | bytes) -> list[str]:
    """URLs of a fastai ``urls_<class>.txt``: one per line; blank lines and ``#`` comments skipped.

    Lines are kept as written (no scheme or syntax filtering) so that a bad line shows up
    as a failed URL with its reason instead of silently disappearing.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    urls = []
    for line in text.lstrip("\ufeff").splitlines():
        url = line.strip()
        if url and not url.startswith("#"):
            urls.append(url)
    return urls


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
    asyncio.run(_download(ctx, candidates, tally))
    return tally.result()


async def _download(ctx: JobContext, candidates: list[Candidate], tally: Tally) -> None:
    limits = FetchLimits.from_settings(ctx.settings)
    policy = AddressPolicy.from_setting(ctx.settings.fetch_allow)
    async with Downloader(limits, policy) as downloader:
        await take_in(ctx, candidates, downloader, tally, "importing URLs")
