"""Every route of the API, in one list: the application is built from it (``server/app.py``)
and the OpenAPI document describes it. A new route goes into its resource's module and its
``ROUTES``; a new resource module goes into this list."""

from __future__ import annotations

from server.api import (
    admin,
    auth,
    backup,
    bids,
    bindings,
    committee,
    decryption,
    documents,
    evaluations,
    media,
    meta,
    record,
    sessions,
    sheets,
    supervision,
)
from server.api.routing import Route

ROUTES: list[Route] = [
    *meta.ROUTES,  # the OpenAPI document, the server's clock
    *auth.ROUTES,  # CA login, token renewal, one-time page links
    *admin.ROUTES,  # companies, accounts, projects, lots, sites, rooms, the expert pool
    *bindings.ROUTES,  # the certificates bound to each company and the binding log
    *sessions.ROUTES,  # opening sessions and the host's and supervisor's steps
    *bids.ROUTES,  # sign-in, upload, receipt, withdrawal, rehearsal, deposit, guarantee
    *decryption.ROUTES,  # the decryption window, keys, incidents
    *record.ROUTES,  # objections, confirmation, the opening record
    *backup.ROUTES,  # backup decryption by custodians
    *evaluations.ROUTES,  # evaluation sessions
    *committee.ROUTES,  # the draw, members, sign-in at the room, the chair
    *sheets.ROUTES,  # sheets, rescoring, stages, the report
    *documents.ROUTES,  # the expert desk's documents and signature relay
    *media.ROUTES,  # live links and TURN
    *supervision.ROUTES,  # the supervisor wall
]
