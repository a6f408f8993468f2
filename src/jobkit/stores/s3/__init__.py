"""``s3://bucket/prefix``: the store every machine of a cluster can reach.

One concept per module:

    store.py    S3Store: what each call costs in requests, compare-and-set on ETags
    layout.py   object keys: records, blobs and the index keys that list them
    listing.py  answering rows/query from index keys, re-checked against records
    errors.py   boto3's errors turned into jobkit's one-line errors
    url.py      the URL's options (endpoint, region, timeouts, workers)

boto3 is imported when a store is opened, not with this package, so the
registry entry ``jobkit.stores.s3:S3Store`` stays cheap to resolve.
"""

from __future__ import annotations

from .store import S3Store
from .url import S3Options, parse_url

__all__ = ["S3Options", "S3Store", "parse_url"]
