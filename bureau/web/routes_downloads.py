"""Evidence downloads of a factory's year: the HTML report, its PDF, the sealed folder (zip).

Every download writes an audit row (who, which file, which factory and year). The three are
the ones `tieragent bureau evidence` writes into its folder (bureau.evidence_export): the
HTML report with its details (per-device breakdown, issue and receipt dates, declarant:
bureau.evidence_details, built from the same entries, chain slice, receipts and declarations
as export_evidence builds them), the PDF printed from that HTML (bureau.pdf_report), and the
sealed folder itself, zipped.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bureau.annual import AnnualError
from bureau.evidence_export import evidence_report, export_evidence, load_chain
from bureau.pdf_report import PdfError, render_pdf
from bureau.receipts import BureauKeyMissing, load_bureau_key
from bureau.web.auth import Principal, Refused, portal_of, principal
from bureau.web.factory_view import baseline_year, default_through, evaluate, policy_files
from bureau.web.routes_factories import _THROUGH, _YEAR, _year_through

router = APIRouter(tags=["downloads"])


def _audit(request: Request, who: Principal, what: str, target: str) -> None:
    portal_of(request).accounts().audit(who.user.username, what, target)


def _evidence_html(request: Request, factory_id: str, year: int | None,
                   through: str | None) -> tuple[str, str]:
    """(the evidence report HTML with its details, the download's base name): the folder's
    report.html for the same year and day."""
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    store = portal.store()
    try:
        result, entries = evaluate(store, portal.settings, factory_id, chosen, last)
    except AnnualError as error:
        raise Refused(409, str(error)) from None
    chain = load_chain(store, factory_id, chosen)
    declarations = policy_files(portal.settings, factory_id).load().declarations
    _, html = evidence_report(
        store, factory_id, result.to_json(), [*entries, *chain], declarations
    )
    return html, f"evidence-{factory_id}-{chosen}"


def _attachment(body: bytes, media: str, name: str) -> Response:
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/factories/{factory_id}/evidence.html")
def evidence_html(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The evidence report (HTML, self-contained) of the factory's year."""
    html, name = _evidence_html(request, factory_id, year, through)
    _audit(request, who, "download.evidence.html", name)
    return _attachment(html.encode("utf-8"), "text/html; charset=utf-8", f"{name}.html")


@router.get("/factories/{factory_id}/evidence.pdf")
def evidence_pdf(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The evidence report as PDF (A4, the folder's report.pdf); 503 when WeasyPrint's
    system libraries are missing on this bureau."""
    html, name = _evidence_html(request, factory_id, year, through)
    try:
        pdf = render_pdf(html)
    except PdfError as error:
        raise Refused(503, str(error)) from None
    _audit(request, who, "download.evidence.pdf", name)
    return _attachment(pdf, "application/pdf", f"{name}.pdf")


@router.get("/factories/{factory_id}/evidence.zip")
def evidence_zip(
    request: Request, factory_id: str, year: int | None = _YEAR, through: str | None = _THROUGH,
    who: Principal = Depends(principal),
) -> Response:
    """The sealed evidence folder (as `tieragent bureau evidence` writes it), zipped; check
    it with `tieragent verify DIR --bureau-key bureau.jwk`."""
    chosen, last = _year_through(request, factory_id, year, through)
    portal = portal_of(request)
    if portal.settings.bureau_key is None:
        raise Refused(503, "This portal was started without --key (the bureau's key), so it "
                      "cannot seal an evidence folder.")
    try:
        key = load_bureau_key(portal.settings.bureau_key)
    except BureauKeyMissing as error:
        raise Refused(503, str(error)) from None
    files = policy_files(portal.settings, factory_id)
    name = f"evidence-{factory_id}-{chosen}"
    with tempfile.TemporaryDirectory(prefix="tieragent-evidence-") as tmp:
        out = Path(tmp) / name
        try:
            export_evidence(
                portal.store(), factory_id, chosen, out, files,
                baseline_year=baseline_year(chosen, files),
                through=last if last is not None else default_through(chosen),
                bureau_key=key,
            )
        except AnnualError as error:
            raise Refused(409, str(error)) from None
        body = _zip(out, name)
    _audit(request, who, "download.evidence.zip", name)
    return _attachment(body, "application/zip", f"{name}.zip")


def _zip(folder: Path, name: str) -> bytes:
    """The folder's files under `name/`, in path order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, f"{name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()
