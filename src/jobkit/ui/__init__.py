"""``jobkit ui``: a local web view of the store (needs the ``ui`` extra).

::

    jobkit ui ──► cli/ui.py: token, bind 127.0.0.1:PORT, print the URL
              ──► app.py (Starlette, run by uvicorn)
                    security.py  token / origin / host checks on every request
                    paging.py    keyset pages of the jobs table
                    pages.py     server-rendered HTML;  charts.py  usage SVG
                    sse.py       live logs as server-sent events

Nothing here is imported by ``import jobkit`` or the other CLI commands:
Starlette and uvicorn load only when the view starts.
"""
